"""An SFU worker process: owns whole rooms, forwards their media on one core.

Started by the node (``sfu.pool``) as ``python -m MODULE --fd N --config JSON`` with one end
of a socket pair; serves ``sfu.ipc`` requests on it and exits when the node goes away.
MODULE is this one, or a program of the node's that calls ``main`` with the node's own
process setup (its logging, its collector settings), so that the SFU knows nothing of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, Final

import msgspec

from sfu import ipc
from sfu.aiortc_glue import install, server_rtc_configuration
from sfu.host import LocalHost
from sfu.room import RoomPolicy, SfuError

log = logging.getLogger("huddle.sfu.worker")
METRICS_INTERVAL_S: Final = 1.0


class WorkerConfig(msgspec.Struct, kw_only=True):
    index: int
    ice_addresses: list[str]
    policy: dict[str, Any]
    announced: dict[str, str] = msgspec.field(default_factory=dict)
    port_min: int = 0
    port_max: int = 0
    log_level: str = "info"


def _plain_logging(config: WorkerConfig) -> None:
    logging.basicConfig(level=config.log_level.upper())


def _nothing() -> None:
    pass


async def serve(fd: int, config: WorkerConfig, on_ready: Callable[[], None] = _nothing) -> None:
    """Serve the node on ``fd`` until it goes away; ``on_ready`` runs once start-up is done."""

    def count_decoder() -> None:
        host.decoders_created += 1

    install(
        host_addresses=config.ice_addresses,
        port_range=(config.port_min, config.port_max) if config.port_min else None,
        on_decoder=count_decoder,
    )
    reader, writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=fd))

    def send(message: ipc.Msg) -> None:
        if not writer.is_closing():
            ipc.write_frame(writer, message)

    host = LocalHost(
        rtc_config=server_rtc_configuration(),
        policy=RoomPolicy(**config.policy),
        announced=config.announced,
        on_offer=lambda participant, sdp, tracks: send(
            ipc.Offer(participant=participant, sdp=sdp, tracks=tracks)
        ),
        on_speakers=lambda room, speakers: send(ipc.Speakers(room=room, speakers=speakers)),
        on_layers=lambda participant, paused: send(
            ipc.Layers(participant=participant, paused=paused)
        ),
        on_paused=lambda participant, tracks, unselected: send(
            ipc.Paused(participant=participant, tracks=tracks, unselected=unselected)
        ),
    )
    on_ready()
    log.info("sfu worker ready", extra={"index": config.index, "pid": os.getpid()})
    tasks: set[asyncio.Task[None]] = set()

    async def report_metrics() -> None:
        while True:
            rooms, tracks = host.snapshot()
            send(
                ipc.Metrics(
                    rooms=rooms,
                    tracks=tracks,
                    decoders_created=host.decoders_created,
                    pid=os.getpid(),
                )
            )
            await asyncio.sleep(METRICS_INTERVAL_S)

    async def handle(request: ipc.Request) -> None:
        try:
            method = getattr(host, ipc.rpc_method(request))
            value = await method(**ipc.request_args(request))
            send(ipc.Result(id=request.id, value=value))
        except SfuError as exc:
            send(ipc.Failure(id=request.id, code=exc.code, message=exc.message))
        except Exception as exc:
            log.exception("worker request failed")
            send(ipc.Failure(id=request.id, code="internal", message=type(exc).__name__))

    metrics_task = asyncio.create_task(report_metrics())
    decoder = msgspec.msgpack.Decoder(ipc.Request)
    try:
        while True:
            try:
                frame = await ipc.read_frame(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                break  # the node is gone: so are we
            task = asyncio.create_task(handle(decoder.decode(frame)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    finally:
        metrics_task.cancel()
        await host.close()
        writer.close()


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def main(
    argv: list[str] | None = None,
    *,
    setup: Callable[[WorkerConfig], None] = _plain_logging,
    on_ready: Callable[[], None] = _nothing,
) -> int:
    """Run a worker: ``setup`` prepares the process (logging) before anything else runs,
    ``on_ready`` once the worker is ready to serve."""
    parser = argparse.ArgumentParser(prog="python -m sfu.worker")
    parser.add_argument("--fd", type=int, required=True)
    parser.add_argument("--config", required=True, help="WorkerConfig as JSON")
    args = parser.parse_args(argv)
    config = msgspec.json.decode(args.config, type=WorkerConfig)
    setup(config)
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node stops us by closing the socket
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.fd, config, on_ready))
    else:
        uvloop.run(serve(args.fd, config, on_ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())

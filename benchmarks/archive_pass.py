"""The history archiver's pass alone: the node's CPU per event archived, by thread.

    python -m benchmarks.archive_pass                              # 250 x 1, 20 passes
    python -m benchmarks.archive_pass --convs 250 --events 3 --store sqlite --json PATH

Starts a redis-server of its own and a node's app on it (no HTTP), makes ``--convs`` direct
conversations, then ``--passes`` times: sends ``--events`` messages in each with the
archiver not told of them (nothing is archived meanwhile), and times one pass over all of
them (``Archiver.archive_many``, as the archiver's loop makes it). Reports the node's CPU per
event archived (median of the passes), split between the event loop's thread (reading the
log, decoding, the rows and search terms) and the others (SQLite's), and Redis's. A pass of
the chat sweep's rooms-of-2 step holds ~0.8 events per conversation; a busy group, tens.

The node's window is the default (2,000 events: no trims at these sizes). Bounded: at most
``--passes`` passes of ``--convs`` x ``--events`` events, each pass timed out after
``PASS_TIMEOUT_S``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final

import psutil
import redis.asyncio as redis
from aiohttp import web

from benchmarks.common import run_main, write_json
from benchmarks.history_load import _Reader, text_of, used_cpu
from benchmarks.procs import run_loop
from chat import wire as w
from huddle.app import ARCHIVER, create_app
from huddle.config import Settings
from huddle.redis_server import spawn_sync
from signaling.server import HUB

PASS_TIMEOUT_S: Final = 60.0
SEND_CONCURRENCY: Final = 64


def _thread_cpu(main_id: int) -> tuple[float, float]:
    """CPU seconds so far of this process's thread ``main_id`` and of all its others."""
    main = other = 0.0
    for t in psutil.Process().threads():
        if t.id == main_id:
            main += t.user_time + t.system_time
        else:
            other += t.user_time + t.system_time
    return main, other


async def measure(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    proc, url = spawn_sync(folder / "redis")
    client = redis.Redis.from_url(url)
    settings = Settings(
        redis_url=url,
        data_dir=folder / "data",
        port=0,
        log_format="text",
        log_level="warning",
        sfu_workers=0,
        chat_window_days=0,
        chat_send_per_s=1_000_000,
        history=args.store,
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        service = app[HUB].chat
        archiver = app[ARCHIVER]
        service.store.on_logged = None  # the passes below are the only ones
        readers: dict[str, _Reader] = {}

        def reader(user: str) -> _Reader:
            return readers.setdefault(user, _Reader(user))

        rng = random.Random(1)
        convs: list[str] = []

        async def send(i: int, cid: str, n: int) -> str:
            # The first round makes user a{i}'s direct conversation with b{i}.
            conv, to = (convs[i], None) if convs else (None, f"b{i}")
            req = w.ChatSend(id="", conv=conv, to=to, client_id=cid, text=text_of(rng, n))
            reply = await service.send(reader(f"a{i}"), req)
            return str(reply.conv)  # type: ignore[attr-defined]

        async def send_round(tag: str, n: int) -> list[str]:
            """Message ``n`` in every conversation, SEND_CONCURRENCY at once; their ids."""
            sent: list[str] = []
            for start in range(0, args.convs, SEND_CONCURRENCY):
                batch = range(start, min(args.convs, start + SEND_CONCURRENCY))
                sent += await asyncio.gather(*(send(i, f"{tag}-{i}", n) for i in batch))
            return sent

        convs += await send_round("c", 1)
        await archiver.archive_many(convs)  # the first messages: not timed

        main_id = threading.get_native_id()
        cpu: list[float] = []
        walls: list[float] = []
        main_total = other_total = redis_total = 0.0
        for p in range(args.passes):
            for e in range(args.events):
                await send_round(f"p{p}e{e}", p * args.events + e + 2)
            redis_before = await used_cpu(client)
            main0, other0 = _thread_cpu(main_id)
            began, own = time.perf_counter(), time.process_time()
            async with asyncio.timeout(PASS_TIMEOUT_S):
                left = await archiver.archive_many(convs)
            cpu.append(time.process_time() - own)
            walls.append(time.perf_counter() - began)
            main1, other1 = _thread_cpu(main_id)
            redis_total += await used_cpu(client) - redis_before
            main_total += main1 - main0
            other_total += other1 - other0
            if left:
                raise RuntimeError(f"{len(left)} conversations not archived in pass {p}")
        events = args.convs * args.events
        archived = sum(h.last_seq for h in (await archiver.history.heads(convs)).values())
        if archived != args.convs * (1 + args.passes * args.events):
            raise RuntimeError(f"the store has {archived} messages, not every one sent")
        all_events = events * args.passes
        return {
            "config": {
                "store": args.store,
                "convs": args.convs,
                "events_per_conv_per_pass": args.events,
                "passes": args.passes,
            },
            "summary": {
                "node_cpu_us_per_event": statistics.median(cpu) / events * 1e6,
                "node_cpu_us_per_event_min": min(cpu) / events * 1e6,
                # Thread clocks tick every 10 ms: over all the passes, not each.
                "loop_thread_us_per_event": main_total / all_events * 1e6,
                "other_threads_us_per_event": other_total / all_events * 1e6,
                "redis_cpu_us_per_event": redis_total / all_events * 1e6,
                "pass_ms_median": statistics.median(walls) * 1e3,
                "messages_stored": archived,
            },
        }
    finally:
        await runner.cleanup()
        await client.aclose()
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.archive_pass", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--convs", type=int, default=250, help="direct conversations")
    parser.add_argument("--events", type=int, default=1, help="events per conversation and pass")
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--store", choices=("sqlite",), default="sqlite")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.convs < 1 or args.events < 1 or args.passes < 1:
        parser.error("--convs, --events and --passes are at least 1")
    with tempfile.TemporaryDirectory(prefix="archive-pass-") as tmp:
        figures = run_loop(measure(args, Path(tmp)))
    for part in ("config", "summary"):
        for key, value in figures[part].items():
            print(f"{key}: {value:,.1f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        write_json(args.json, "archive_pass", figures)
    return 0


if __name__ == "__main__":
    run_main(main)

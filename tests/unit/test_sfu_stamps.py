"""The load bots' kernel receive stamps (benchmarks.sfu_stamps) on real loopback datagrams."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from aioice.ice import Connection

from benchmarks import sfu_stamps


class _Catch(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.seen: list[tuple[bytes, float | None, float]] = []
        self.done = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen.append((data, sfu_stamps.LAST_STAMP.value, time.monotonic()))
        if len(self.seen) == 3 and not self.done.done():
            self.done.set_result(None)


async def _receive_three_late() -> list[tuple[bytes, float | None, float]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(_Catch, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for i in range(3):
            sender.sendto(b"x%d" % i, ("127.0.0.1", port))
            time.sleep(0.05)  # noqa: ASYNC251 (blocks the loop on purpose: datagrams wait)
        await asyncio.wait_for(protocol.done, 5)
    finally:
        sender.close()
        transport.close()
    return protocol.seen


def _install(monkeypatch: pytest.MonkeyPatch) -> None:
    """install_kernel_stamps as a bot runs it, its patches undone after the test."""
    for owner, name in (
        (sfu_stamps._Transport, "__init__"),
        (sfu_stamps._Transport, "_read_ready"),
        (Connection, "data_received"),
        (Connection, "recv"),
    ):
        monkeypatch.setattr(owner, name, getattr(owner, name))
    sfu_stamps.install_kernel_stamps()


def test_datagrams_carry_the_kernel_arrival_time(monkeypatch: pytest.MonkeyPatch) -> None:
    # Through the installer: the first datagram a socket gets is stamped on arrival only once
    # the kernel's arrival stamping is on, which it turns on late (sfu_stamps docstring).
    _install(monkeypatch)
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        seen = runner.run(_receive_three_late())
    assert [data for data, _, _ in seen] == [b"x0", b"x1", b"x2"]
    # Each was stamped on arrival, while the loop was blocked: well before the protocol saw
    # it, and 50 ms apart as they were sent.
    stamps = [stamp for _, stamp, _ in seen]
    assert all(stamp is not None for stamp in stamps), seen
    first, second, third = (s for s in stamps if s is not None)
    assert 0.04 < second - first < 1.0, seen
    assert 0.04 < third - second < 1.0, seen
    assert seen[0][2] - first > 0.09, seen  # x0 waited for the other sends before the loop ran
    assert sfu_stamps.LAST_STAMP.value is None


def test_connection_hands_each_datagram_its_stamp(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Connection, "data_received", sfu_stamps._stamped_data_received)
    monkeypatch.setattr(Connection, "recv", sfu_stamps._stamped_recv)

    async def run() -> list[tuple[bytes, float | None]]:
        connection = Connection(ice_controlling=True)
        connection._nominated[1] = object()  # type: ignore[assignment]
        for i, stamp in enumerate((1.5, None, 2.5)):
            sfu_stamps.LAST_STAMP.value = stamp
            connection.data_received(b"d%d" % i, 1)
        sfu_stamps.LAST_STAMP.value = None
        out = []
        for _ in range(3):
            data = await connection.recv()
            out.append((data, connection.last_stamp))  # type: ignore[attr-defined]
        return out

    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        assert runner.run(run()) == [(b"d0", 1.5), (b"d1", None), (b"d2", 2.5)]

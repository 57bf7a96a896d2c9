"""signaling.flush_round: the connections' writes of one round of the event loop, done by one
callback after it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from signaling.flush_round import FlushRound


class Connection:
    def __init__(self, name: str, flushed: list[str], fail: bool = False) -> None:
        self.name = name
        self.flushed = flushed
        self.fail = fail

    def flush(self) -> None:
        self.flushed.append(self.name)
        if self.fail:
            raise RuntimeError("socket gone")


async def test_connections_flush_once_the_round_is_over_in_the_order_added() -> None:
    flushed: list[str] = []
    batch = FlushRound()
    for name in ("a", "b", "c"):
        batch.add(Connection(name, flushed))
    assert flushed == []  # nothing is written while the round that queued it runs
    await asyncio.sleep(0)
    assert flushed == ["a", "b", "c"]
    await asyncio.sleep(0)
    assert flushed == ["a", "b", "c"]  # each once


async def test_the_round_is_one_callback_of_the_loop() -> None:
    loop = asyncio.get_running_loop()
    scheduled: list[object] = []
    call_soon = loop.call_soon

    def counting(callback: Callable[..., object], *args: object) -> asyncio.Handle:
        scheduled.append(callback)
        return call_soon(callback, *args)

    batch = FlushRound()
    flushed: list[str] = []
    loop.call_soon = counting  # type: ignore[method-assign,assignment]
    try:
        for i in range(100):
            batch.add(Connection(str(i), flushed))
    finally:
        del loop.call_soon
    assert len(scheduled) == 1
    await asyncio.sleep(0)
    assert flushed == [str(i) for i in range(100)]


async def test_one_connections_failure_leaves_the_others_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    flushed: list[str] = []
    batch = FlushRound()
    batch.add(Connection("a", flushed))
    batch.add(Connection("broken", flushed, fail=True))
    batch.add(Connection("c", flushed))
    await asyncio.sleep(0)
    assert flushed == ["a", "broken", "c"]
    assert [r.getMessage() for r in caplog.records] == ["flush failed"]


async def test_a_connection_added_in_a_later_round_gets_a_round_of_its_own() -> None:
    flushed: list[str] = []
    batch = FlushRound()
    batch.add(Connection("a", flushed))
    await asyncio.sleep(0)
    batch.add(Connection("b", flushed))
    assert flushed == ["a"]
    await asyncio.sleep(0)
    assert flushed == ["a", "b"]

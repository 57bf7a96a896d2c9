"""Stopping background tasks: a task that will not end does not hold shutdown up."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from signaling import tasks


async def test_cancelled_tasks_are_awaited_and_a_stubborn_one_is_left_behind(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(tasks, "STOP_WAIT_S", 0.2)
    stopped: list[str] = []

    async def polite() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            stopped.append("polite")

    give_up = asyncio.Event()

    async def stubborn() -> None:
        while not give_up.is_set():  # swallows its cancellation, as a careless loop might
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    good = asyncio.create_task(polite(), name="polite")
    bad = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    async with asyncio.timeout(2):
        await tasks.cancel_and_wait([good, bad], "test")
    assert stopped == ["polite"] and good.cancelled()
    assert not bad.done()
    assert "tasks did not stop" in caplog.text
    give_up.set()
    await bad

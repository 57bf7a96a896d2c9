"""signaling.tasks.TaskCpu: a task's own CPU, without what the loop ran while it waited."""

from __future__ import annotations

import asyncio
import time

import pytest

from signaling.tasks import TaskCpu


def _burn(seconds: float) -> None:
    """Keep this thread busy for ``seconds`` of its own CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


async def test_counts_the_task_s_steps_and_not_the_others_run_meanwhile() -> None:
    clock = TaskCpu()

    async def task() -> str:
        for _ in range(3):
            _burn(0.02)
            await asyncio.sleep(0.05)
        return "done"

    async def other() -> None:
        # Runs while the task sleeps: on the same thread, not the task's.
        for _ in range(3):
            await asyncio.sleep(0.01)
            _burn(0.03)

    result, _ = await asyncio.gather(clock.timed(task()), other())
    assert result == "done"
    assert 0.055 <= clock.seconds < 0.085  # three steps of 20 ms, not the other's 90


async def test_an_error_inside_comes_out_and_its_step_is_counted() -> None:
    clock = TaskCpu()

    async def failing() -> None:
        await asyncio.sleep(0)
        _burn(0.01)
        raise LookupError("gone")

    with pytest.raises(LookupError, match="gone"):
        await clock.timed(failing())
    assert clock.seconds >= 0.009


async def test_a_cancellation_reaches_the_coroutine_which_may_clean_up() -> None:
    clock = TaskCpu()
    cleaned = asyncio.Event()

    async def waits() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.set()

    task = asyncio.ensure_future(clock.timed(waits()))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()


async def test_the_clock_adds_up_across_awaits_of_several_coroutines() -> None:
    clock = TaskCpu()

    async def step() -> int:
        _burn(0.01)
        return 1

    total = 0
    for _ in range(3):
        total += await clock.timed(step())
    assert total == 3
    assert clock.seconds >= 0.029

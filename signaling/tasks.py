"""Background tasks: stopping them at shutdown, and the CPU one takes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Coroutine, Generator, Iterable
from typing import Any, Final, TypeVar

log = logging.getLogger("huddle.tasks")
_T = TypeVar("_T")

# How long a cancelled task may take to end before shutdown goes on without it.
STOP_WAIT_S: Final = 5.0


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], what: str) -> None:
    """Cancel ``tasks`` and wait for them to end, at most ``STOP_WAIT_S``: a task that does
    not end by then (one that swallowed its cancellation somewhere below) is named in a
    warning and left behind, so that a node's shutdown never hangs on it (two clean-clone
    runs saw a test's node stop hang for 120 s)."""
    pending = [t for t in tasks if not t.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return
    _, late = await asyncio.wait(pending, timeout=STOP_WAIT_S)
    if late:
        log.warning(
            "tasks did not stop when cancelled",
            extra={"what": what, "tasks": sorted(t.get_name() for t in late)},
        )


class TaskCpu:
    """The CPU a background task's own steps take on the thread that runs them: the
    coroutine given to :meth:`timed` is stepped through here, and ``time.thread_time()``
    read around each step, so that the callbacks and other tasks the event loop runs
    while this one waits are not counted (a thread's clock over the task's life would
    count them all). Two reads of the thread's clock a step: for a task that runs now
    and then (an archiver's passes), not for a hot path."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def timed(self, coro: Coroutine[Any, Any, _T]) -> Awaitable[_T]:
        return _Timed(coro, self)


class _Timed(Awaitable[_T]):
    def __init__(self, coro: Coroutine[Any, Any, _T], clock: TaskCpu) -> None:
        self._coro = coro
        self._clock = clock

    def __await__(self) -> Generator[Any, Any, _T]:
        coro, clock = self._coro, self._clock
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            began = time.thread_time()
            try:
                yielded = coro.send(sent) if thrown is None else coro.throw(thrown)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            finally:
                clock.seconds += time.thread_time() - began
            try:
                sent, thrown = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # a cancellation, say: the coroutine gets it
                sent, thrown = None, exc

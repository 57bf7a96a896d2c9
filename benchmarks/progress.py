"""A live progress bar for each phase of a load generator: elapsed time, ETA, current rate.

A phase's work happens in driver or bot processes (or in the nodes), so the bar does not
count it itself: it shows the phase's clock against its planned length (or what ``done``
returns against ``total``), and the current rate of whatever ``count`` returns (a running
total, such as the events the nodes say they sent), read every :data:`SAMPLE_S` by a thread
of its own. On stderr, and only when stderr is a terminal: piped or redirected output (CI,
``2> log``) gets the usual progress lines alone.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from benchmarks.common import node_metrics

SAMPLE_S: Final = 0.5
# The current rate is over the last few samples: a single scrape would jitter.
RATE_SAMPLES: Final = 4

Count = Callable[[], float | None]


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        rate = task.fields.get("rate")
        unit = task.fields.get("unit", "/s")
        return Text("" if rate is None else f"{rate:,.0f} {unit}", style="progress.data.speed")


def console() -> Console:
    return Console(stderr=True)


class PhaseBar:
    """One phase's bar; :meth:`close` (or leaving :func:`phase_bar`) removes it."""

    def __init__(
        self,
        description: str,
        seconds: float | None = None,
        *,
        total: float | None = None,
        done: Count | None = None,
        count: Count | None = None,
        unit: str = "/s",
        out: Console | None = None,
    ) -> None:
        self.out = out or console()
        self.seconds, self.total, self.done, self.count = seconds, total, done, count
        self.started = time.monotonic()
        self.rate: float | None = None
        self._history: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._progress: Progress | None = None
        if not self.out.is_terminal:
            return
        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            _RateColumn(),
            console=self.out,
            transient=True,
        )
        # Without ``done`` the bar follows the clock.
        bar_total = total if done is not None else seconds
        self._task = self._progress.add_task(description, total=bar_total, rate=None, unit=unit)
        self._progress.start()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)
        self._thread.start()

    def sample(self) -> None:
        """Read ``count`` (and ``done``) once and update the bar."""
        now = time.monotonic()
        if self.count is not None:
            value = _safe(self.count)
            if value is not None:
                self._history = [*self._history[-RATE_SAMPLES:], (now, value)]
                (t0, v0), (t1, v1) = self._history[0], self._history[-1]
                self.rate = (v1 - v0) / (t1 - t0) if t1 > t0 else None
        if self._progress is None:
            return
        # Without ``done``, the phase's clock.
        done = self.done
        completed = (_safe(done) or 0.0) if done is not None else now - self.started
        self._progress.update(self._task, completed=completed, rate=self.rate)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_S):
            self.sample()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._progress is not None:
            self._progress.stop()


def _safe(read: Count) -> float | None:
    """A reading, or None when the source is not answering (the bar must never fail a run)."""
    try:
        return read()
    except Exception:
        return None


@contextlib.contextmanager
def phase_bar(
    description: str,
    seconds: float | None = None,
    *,
    total: float | None = None,
    done: Count | None = None,
    count: Count | None = None,
    unit: str = "/s",
    out: Console | None = None,
) -> Iterator[PhaseBar]:
    """A bar for the body of the ``with``: ``seconds`` long by the clock, or ``done()`` of
    ``total``; ``count()`` a running total whose rate is shown in ``unit``."""
    bar = PhaseBar(description, seconds, total=total, done=done, count=count, unit=unit, out=out)
    try:
        yield bar
    finally:
        bar.close()


def nodes_count(urls: tuple[str, ...] | list[str], metric: str) -> Count:
    """A running total from the nodes' /metrics: every sample whose name starts with
    ``metric``, every node together (None when a node does not answer)."""

    def read() -> float | None:
        total = 0.0
        for url in urls:
            samples = node_metrics(url, (metric,))
            if not samples:
                return None
            total += sum(samples.values())
        return total

    return read


def node_urls_of(urls: tuple[str, ...] | list[str]) -> Callable[[str], Count | None]:
    """``nodes_count`` for these nodes, or None for every metric when there are none (a
    baseline server has no /metrics)."""
    return lambda metric: nodes_count(urls, metric) if urls else None

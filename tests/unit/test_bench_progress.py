"""The load generators' progress bars: live on a terminal, silent otherwise."""

from __future__ import annotations

import io
import time

from rich.console import Console

from benchmarks import progress
from benchmarks.progress import PhaseBar, phase_bar


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120), out


def test_a_terminal_shows_elapsed_eta_and_the_current_rate() -> None:
    console, out = _console(terminal=True)
    total = [0.0]

    def count() -> float:
        total[0] += 50.0
        return total[0]

    with phase_bar("paced", 2.0, count=count, unit="events/s", out=console) as bar:
        bar.sample()
        time.sleep(0.2)
        bar.sample()
        assert bar.rate is not None and bar.rate > 0
        console.file.flush()
        bar._progress.refresh()  # type: ignore[union-attr]
    text = out.getvalue()
    assert "paced" in text
    assert "eta" in text
    assert "events/s" in text
    assert "0:00:0" in text  # elapsed and remaining as clocks


def test_piped_output_gets_no_bar_but_the_rate_is_still_read() -> None:
    console, out = _console(terminal=False)
    readings = iter([10.0, 30.0])
    bar = PhaseBar("saturated", 1.0, count=lambda: next(readings), out=console)
    bar.sample()
    time.sleep(0.05)
    bar.sample()
    bar.close()
    assert out.getvalue() == ""
    assert bar.rate is not None and bar.rate > 0


def test_a_source_that_fails_never_fails_the_run() -> None:
    console, _ = _console(terminal=True)

    def broken() -> float:
        raise OSError("node gone")

    with phase_bar("connect", total=10, done=broken, count=broken, out=console) as bar:
        bar.sample()
        assert bar.rate is None


def test_nodes_count_adds_every_node_and_is_none_when_one_is_silent() -> None:
    # Port 9 on loopback: nothing listens there.
    assert progress.nodes_count(["http://127.0.0.1:9"], "huddle_ws_authenticated")() is None

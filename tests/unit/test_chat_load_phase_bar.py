"""chat_load's measured phases: nothing reads the nodes' /metrics while their CPU is counted.

A live rate read from a node's /metrics costs that node CPU while its CPU is counted (and
only Huddle's nodes: the baselines have no /metrics); the bar of a phase follows the clock,
and what archiving took is read just before and just after the window.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from benchmarks import chat_load, progress
from benchmarks.chat_driver import DeliveryResult, PhaseSpec, SendResult
from benchmarks.chat_servers import Server
from tests.http_stub import http_stub


class _Node(BaseHTTPRequestHandler):
    """A node's /metrics, each read's time noted."""

    read_at: list[float] = []  # noqa: RUF012 (one node per test: the fixture clears it)

    def do_GET(self) -> None:
        if self.path == "/metrics":
            type(self).read_at.append(time.monotonic())
        body = b'huddle_chat_archive_cpu_seconds_total{thread="loop"} 0.25\n'
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _Pool:
    """Drivers that send nothing (one driver's empty results): the phase lasts as long as
    its collect."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.pids: list[int] = []
        self.ended = 0.0

    def send(self, message: Any) -> None:
        pass

    def collect(self, timeout: float, kind: str) -> list[SendResult]:
        time.sleep(self.seconds)
        self.ended = time.monotonic()
        return [SendResult()]

    def run(self, message: Any, timeout: float) -> list[DeliveryResult]:
        return [DeliveryResult()]


@pytest.fixture
def node() -> Iterator[str]:
    _Node.read_at = []
    with http_stub(_Node) as url:
        yield url


def test_a_measured_phase_reads_no_node_metrics_within_its_window(
    node: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A terminal, where the bar is live and samples every SAMPLE_S.
    monkeypatch.setattr(
        progress, "console", lambda: Console(file=io.StringIO(), force_terminal=True)
    )
    proc = subprocess.Popen(["sleep", "30"])
    pool = _Pool(4 * progress.SAMPLE_S)
    try:
        servers = [Server("node1", node, proc, tmp_path / "node1.log")]
        phase = PhaseSpec(
            kind="paced",
            prefix="t0p1.",
            start_at=time.monotonic() + 0.2,
            duration=1.0,
            rate=10.0,
            seed=1,
            senders_per_group=1,
        )
        figures = chat_load.run_phase(pool, servers, os.getpid(), [], phase)  # type: ignore[arg-type]
    finally:
        proc.kill()
        proc.wait()
    assert figures.kind == "paced"
    # What archiving took: read once before the window and once after it (the same
    # counter both times here), never within it.
    assert figures.archive_cpu_s == 0.0
    assert len(_Node.read_at) == 2
    before, after = _Node.read_at
    assert before < phase.start_at
    assert after >= pool.ended

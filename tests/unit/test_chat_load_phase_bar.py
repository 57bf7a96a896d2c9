"""chat_load's measured phases: the progress bar reads nothing of the nodes it measures.

A live rate read from a node's /metrics costs that node CPU while its CPU is counted (and
only Huddle's nodes: the baselines have no /metrics); the bar of a phase follows the clock.
"""

from __future__ import annotations

import io
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from benchmarks import chat_load, progress
from benchmarks.chat_driver import DeliveryResult, PhaseSpec, SendResult
from benchmarks.chat_servers import Server


class _Node(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        if self.path == "/metrics":
            type(self).hits += 1
        body = b'huddle_ws_messages_out_total{kind="event"} 5.0\nhuddle_ws_authenticated 2.0\n'
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

    def send(self, message: Any) -> None:
        pass

    def collect(self, timeout: float, kind: str) -> list[SendResult]:
        time.sleep(self.seconds)
        return [SendResult()]

    def run(self, message: Any, timeout: float) -> list[DeliveryResult]:
        return [DeliveryResult()]


@pytest.fixture
def node() -> Iterator[str]:
    _Node.hits = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Node)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_measured_phase_s_bar_reads_no_node_metrics(
    node: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A terminal, where the bar is live and samples every SAMPLE_S.
    monkeypatch.setattr(
        progress, "console", lambda: Console(file=io.StringIO(), force_terminal=True)
    )
    proc = subprocess.Popen(["sleep", "30"])
    try:
        servers = [Server("node1", node, proc, tmp_path / "node1.log")]
        phase = PhaseSpec(
            kind="paced",
            prefix="t0p1.",
            start_at=time.monotonic(),
            duration=1.0,
            rate=10.0,
            seed=1,
            senders_per_group=1,
        )
        seconds = 4 * progress.SAMPLE_S
        figures = chat_load.run_phase(
            _Pool(seconds),  # type: ignore[arg-type]
            servers,
            os.getpid(),
            [],
            phase,
        )
    finally:
        proc.kill()
        proc.wait()
    assert figures.kind == "paced"
    assert _Node.hits == 0
    # The node answers: a bar that read it would have counted here.
    assert progress.nodes_count([node], "huddle_ws_messages_out_total")() == 5.0
    assert _Node.hits == 1

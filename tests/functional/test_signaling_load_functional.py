"""The signaling load benchmark runs end to end at a tiny size and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

N = 40


@pytest.mark.slow
def test_tiny_run_writes_summary(tmp_path: Path) -> None:
    out = tmp_path / "signaling_load.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.signaling_load",
            "--n",
            str(N),
            "--procs",
            "1",
            "--duration",
            "1",
            "--paced-duration",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "request_rate_vs_bare" in run.stdout

    doc = json.loads(out.read_text())
    summary = doc["summary"]
    assert set(summary) == {"request_rate_vs_bare", "kib_per_idle_connection", "p99_ms"}
    for key, value in summary.items():
        assert isinstance(value, float) and value > 0, (key, value)
    assert doc["n"] == N
    for kind in ("huddle", "bare"):
        result = doc[kind]
        assert result["connected"] == N
        assert result["connect_rate_per_s"] > 0
        assert result["saturation"]["requests"] > 0
        assert result["latency"]["p50_ms"] > 0
        assert result["saturation"]["cpu"]["server_s"] > 0
        # One driver process (--procs 1), and it did work: an empty list would pass all().
        drivers_s = result["saturation"]["cpu"]["drivers_s"]
        assert len(drivers_s) == 1 and drivers_s[0] > 0, drivers_s

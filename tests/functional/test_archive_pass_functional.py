"""The archiver's pass benchmark (benchmarks/archive_pass.py) runs end to end at a small
size and stores every message it sent."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import run_benchmark

CONVS = 30
EVENTS = 2
PASSES = 3


def test_a_small_run_archives_every_message_and_reports_its_cost(tmp_path: Path) -> None:
    out = tmp_path / "pass.json"
    args = ["--convs", str(CONVS), "--events", str(EVENTS), "--passes", str(PASSES)]
    run = run_benchmark("archive_pass", *args, "--json", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "archive_pass"
    assert doc["config"] == {
        "store": "sqlite",
        "convs": CONVS,
        "events_per_conv_per_pass": EVENTS,
        "passes": PASSES,
    }
    summary = doc["summary"]
    # Each conversation's first message, then EVENTS in each pass: all in the store.
    assert summary["messages_stored"] == CONVS * (1 + EVENTS * PASSES)
    assert summary["node_cpu_us_per_event"] >= summary["node_cpu_us_per_event_min"] > 0
    assert summary["redis_cpu_us_per_event"] > 0
    assert summary["pass_ms_median"] > 0
    assert f"messages_stored: {CONVS * (1 + EVENTS * PASSES)}" in run.stdout


def test_sizes_below_one_are_refused() -> None:
    run = run_benchmark("archive_pass", "--passes", "0", timeout=60)
    assert run.returncode == 2
    assert "at least 1" in run.stderr

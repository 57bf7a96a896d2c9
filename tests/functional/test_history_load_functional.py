"""The chat history benchmark runs end to end at its smallest size, with both stores, and
writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SUMMARY = {
    "redis_bytes_per_message",
    "window_bytes_per_message",
    "disk_bytes_per_message",
    "page_p99_ms_cold",
    "search_p99_ms",
    "archive_lag_p99_ms",
    "quiet_user_search_p99_ms",
    "quiet_user_page_p99_ms",
}


@pytest.mark.slow
def test_quick_run_writes_summary(tmp_path: Path) -> None:
    out = tmp_path / "history_load.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.history_load", "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "redis_bytes_per_message" in run.stdout

    doc = json.loads(out.read_text())
    assert set(doc["summary"]) >= SUMMARY
    assert all(doc["summary"][k] > 0 for k in SUMMARY), doc["summary"]
    config = doc["config"]
    assert [r["store"] for r in doc["results"]] == ["sqlite", "postgres"]
    for result in doc["results"]:
        name = result["store"]
        # Every conversation outgrew its window, and Redis kept about a window of each.
        step = max(1, config["window"] // 10)
        bound = config["conversations"] * (config["window"] + step)
        assert result["redis_messages_kept"] <= bound, name
        assert result["redis_events_kept"] <= bound, name
        assert result["messages"] >= config["messages"], name
        # Once the windows are full, a message costs Redis less than one still in it.
        assert result["redis_bytes_per_message"] < result["window_bytes_per_message"], name
        assert result["pages_timed"]["cold"] > 0 and result["pages_timed"]["edge"] > 0, name
        hits = result["search_hits"]
        assert hits["latin rare"] > 0 and hits["cjk rare"] > 0, (name, hits)
        assert hits["latin common"] == hits["cjk common"] == 20, (name, hits)
        archive = result["archive"]
        assert archive["messages"] > 0 and archive["lag_p99_ms"] > 0, name
        assert archive["alone_messages_per_s"] > 0 and archive["alone_cpu_us_per_message"] > 0
        # The quiet user beside the busy conversations: their search finds what their own
        # messages hold (each rare term in some, 20 of each common one) and nothing else,
        # and their pages reach below the window.
        quiet = result["quiet_user_search_hits"]
        assert quiet == result["quiet_user_search_expected"], (name, quiet)
        assert quiet["latin rare"] > 0 and quiet["cjk rare"] > 0, (name, quiet)
        assert quiet["latin common"] == quiet["cjk common"] == 20, (name, quiet)
        assert result["quiet_user_search_foreign_hits"] == 0, name
        assert set(result["quiet_user_search_p99_ms_by_kind"]) == set(quiet), name
        assert all(v > 0 for v in result["quiet_user_search_p99_ms_by_kind"].values()), name
        pages = result["quiet_user_pages_timed"]
        assert pages["all"] == config["samples"] and 0 < pages["below_window"] < pages["all"]
    assert "quiet user" in run.stdout


@pytest.mark.slow
def test_quick_run_with_sender_nodes(tmp_path: Path) -> None:
    """The archive-lag phase sent by two other nodes (processes), each archiving what it
    sends: every message sent is found stored, whichever node stored it."""
    out = tmp_path / "history_load.json"
    argv = ["--quick", "--stores", "sqlite", "--senders", "2", "--json", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.history_load", *argv],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 sender nodes" in run.stderr
    [result] = json.loads(out.read_text())["results"]
    archive = result["archive"]
    assert archive["senders"] == 2
    # --quick: one second at 300 messages/s, each message's lag found.
    assert archive["messages"] == int(archive["rate_asked"])
    assert 0 < archive["lag_p50_ms"] <= archive["lag_p99_ms"]

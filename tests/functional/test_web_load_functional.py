"""The web app benchmark runs end to end in Chromium at a small size and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def test_small_run_writes_summary(tmp_path: Path) -> None:
    out = tmp_path / "web_load.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.web_load",
            "--conversations",
            "10",
            "--messages",
            "200",
            "--repeat",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "list first render" in run.stdout

    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "web_load"
    summary = doc["summary"]
    for key in ("list_first_render_ms", "open_10k_last_page_ms", "first_screen_bytes"):
        assert summary[key] > 0, (key, summary)
    assert summary["first_screen_requests"] > 0
    assert summary["foreign_requests"] == 0
    assert summary["page_errors"] == 0
    # One fresh context, then its reload; each showed every conversation and opened the
    # big one down to its newest message (a full page of it).
    views = doc["views"]
    assert [v["kind"] for v in views] == ["cold", "warm reload"]
    for view in views:
        assert view["rows"] == 10, view
        assert view["open_rows"] >= 50, view
        assert 0 < view["list_dom_ms"] <= view["list_painted_ms"], view
        assert 0 < view["open_dom_ms"] <= view["open_painted_ms"], view
    assert doc["config"] == {"conversations": 10, "messages": 200, "repeat": 1}

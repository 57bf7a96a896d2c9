"""The media benchmark runs end to end at a tiny size and writes its figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_tiny_run_writes_summary(tmp_path: Path) -> None:
    out = tmp_path / "media_load.json"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.media_load",
            "--sizes-mib",
            "1",
            "--clients",
            "1,2",
            "--rss-upload-mib",
            "16",
            "--thumbs",
            "2",
            "--phase-mib",
            "4",
            "--work-dir",
            str(tmp_path),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "download vs aiohttp static" in run.stdout
    body = json.loads(out.read_text())
    summary = body["summary"]
    assert summary["download_vs_aiohttp_static"] > 0
    assert summary["upload_rss_growth_mib"] < 50
    assert {p["name"] for p in body["phases"]} == {"upload", "download", "static", "sendfile"}
    assert body["thumbnails"]["images"] == 2
    assert list(tmp_path.glob("media-bench-*")) == []  # cleaned up

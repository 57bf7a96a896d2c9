"""The store search benchmark runs at a small size with both stores: it seeds its store
once and reuses it, every plan answers each search the same, and it writes its figures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

SMALL = ["--messages", "3000", "--conversations", "30", "--members", "3,20", "--searches", "2"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.history_search", *args],
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def kept() -> Iterator[Path]:
    """A folder for the kept store that PostgreSQL's server user may reach (pytest's own
    folders are closed to other users)."""
    folder = Path(tempfile.mkdtemp(prefix="huddle-search-test-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_small_run_checks_every_plan_and_keeps_its_store(
    store: str, kept: Path, tmp_path: Path
) -> None:
    data, out = kept / "store", tmp_path / "search.json"
    first = run("--store", store, "--data", str(data), *SMALL, "--check", "--json", str(out))
    assert first.returncode == 0, first.stderr[-3000:]
    assert "seeded in" in first.stderr
    doc = json.loads(out.read_text())
    assert doc["summary"]["answers_differ"] == 0
    assert doc["summary"]["search_p99_ms"] > 0
    rows = doc["rows"]
    assert len(rows) == 2 * 9 and all(r["same_by_every_plan"] for r in rows)
    # The rare term is in one message of a thousand of each conversation (100 each here):
    # found in a user's conversations, as the common one is.
    hits = {(r["members"], r["query"]): r["hits"] for r in rows}
    assert hits[20, "rare latin"] > 0 and hits[20, "common latin"] == 20
    assert hits[20, "absent"] == 0 and hits[20, "never together"] == 0

    again = run("--store", store, "--data", str(data), *SMALL, "--only", "rare latin")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "seeded" not in again.stderr  # the kept store, as it was

    other = run("--store", store, "--data", str(data), "--messages", "6000", "--searches", "1")
    assert other.returncode != 0 and "something else" in other.stderr


def test_bad_shape_is_refused(tmp_path: Path) -> None:
    bad = run("--store", "sqlite", "--data", str(tmp_path), "--messages", "5")
    assert bad.returncode == 2 and "--messages must be at least" in bad.stderr

"""benchmarks.pubsub_read's smoke run: both readers get every message of a short run."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import pubsub_read


def test_both_readers_read_every_message(tmp_path: Path) -> None:
    out = tmp_path / "read.json"
    pubsub_read.main(["--messages", "300", "--rate", "3000", "--rounds", "1", "--json", str(out)])
    rounds = json.loads(out.read_text())["rounds"]
    assert sorted(r["reader"] for r in rounds) == ["own", "redis-py"]
    assert all(r["messages"] == 300 and r["cpu_s"] > 0 for r in rounds)

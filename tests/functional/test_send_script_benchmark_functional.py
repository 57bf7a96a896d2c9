"""The send script's benchmark (benchmarks/chat_send_script.py) runs end to end, paced, with
and without Redis's append-only file, and reports what the script ran."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_benchmark

SENDS = 300
CONVS = 40


@pytest.mark.parametrize("aof", [True, False], ids=["aof", "no-aof"])
def test_a_paced_run_counts_every_send_and_its_commands(tmp_path: Path, aof: bool) -> None:
    out = tmp_path / "send.json"
    args = ["--sends", str(SENDS), "--convs", str(CONVS), "--rate", "400", "--json", str(out)]
    if not aof:
        args.append("--no-aof")
    run = run_benchmark("chat_send_script", *args, timeout=60)
    assert run.returncode == 0, run.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc == json.loads(run.stdout)
    assert doc["appendonly"] == ("yes" if aof else "no")
    assert doc["sends"] == SENDS
    # Every send published once to the reader, and so did each conversation's warm-up send.
    assert doc["received"] == SENDS + CONVS
    # A one-to-one send's common case: nine commands (docs of chat/lua/send.lua), the
    # counters' PEXPIRE about once a second.
    assert doc["commands_total_per_send"] == pytest.approx(9, abs=0.05), doc["commands_per_send"]
    assert doc["commands_per_send"]["xadd"] == 1.0
    assert doc["commands_per_send"]["spublish"] == 1.0
    assert doc["redis_cpu_us_per_send"] > 0
    assert doc["script_us_per_call"] > 0

"""What the benchmarks share: figures, tables, log problems, the JSON document, the command
loop of their child processes."""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from benchmarks import common
from benchmarks.procs import serve_commands
from benchmarks.sfu_report import log_problems as sfu_log_problems


def test_percentile_is_nearest_rank_and_always_a_sample() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert common.percentile(values, 50) == 3.0
    assert common.percentile(values, 0) == 1.0
    assert common.percentile(values, 100) == 5.0
    # 99th of 5 samples: the largest, not an interpolation towards it.
    assert common.percentile(values, 99) == 5.0
    assert common.percentile(list(range(1, 201)), 99) == 198
    assert common.percentile([], 50) is None


def test_ratio_is_none_without_a_baseline() -> None:
    assert common.ratio(3.0, 2.0) == 1.5
    assert common.ratio(3.0, 0.0) is None
    assert common.ratio(None, 2.0) is None
    assert common.ratio(3.0, None) is None


def test_cells_and_tables() -> None:
    assert common.fmt(1234.5678, 2) == "1,234.57"
    assert common.fmt(None) == "-"
    assert common.pct(0.256) == "26%"
    assert common.pct(0.01234, 2) == "1.23%"
    assert common.pct(None) == "-"
    lines = list(common.table([("a", "1"), ("long name", "22")], ("metric", "value")))
    assert lines == [
        "metric    | value",
        "----------+------",
        "a         |     1",
        "long name |    22",
    ]


def test_goals_and_their_table() -> None:
    goals = {
        "p99_ms": common.goal(12.5, "< 20", lambda v: v < 20),
        "rate": common.goal(0.25, ">= 0.5", lambda v: v >= 0.5),
        "loss": common.goal(None, "0", lambda v: v == 0),
    }
    assert goals["p99_ms"] == {"target": "< 20", "value": 12.5, "met": True}
    assert goals["rate"]["met"] is False
    assert goals["loss"]["met"] is None  # nothing measured: neither met nor missed
    lines = common.goal_table(goals, 2)
    assert lines[0] == ""
    assert lines[1].split() == ["target", "|", "measured", "|", "goal", "|", "met"]
    assert lines[3].split() == ["p99_ms", "|", "12.50", "|", "<", "20", "|", "yes"]
    assert lines[4].endswith("NO")
    assert lines[5].split()[-3:] == ["0", "|", "-"]


def test_log_problems_count_warnings_and_stray_lines(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    records = [
        {"level": "info", "msg": "listening"},
        {"level": "warning", "msg": "slow consumer"},
        {"level": "warning", "msg": "slow consumer"},
        {"level": "error", "msg": "redis lost", "error": "ConnectionError"},
    ]
    log.write_text(
        "\n".join(json.dumps(r) for r in records)
        + "\nTraceback (most recent call last):\n\n  conn 123456 closed\n"
    )
    assert common.log_problems(log) == {
        "warning: slow consumer": 2,
        "error: redis lost (ConnectionError)": 1,
        "Traceback (most recent call last):": 1,
        "conn 123456 closed": 1,
    }
    assert common.log_problems(log, most=1) == {"warning: slow consumer": 2}
    assert common.log_problems(tmp_path / "missing.log") == {}
    assert common.log_problems(None) == {}
    # The SFU benchmark reads Janus's text log too: problems only, long ids folded.
    janus = tmp_path / "janus.log"
    janus.write_text(
        "session 1234567 created\n[ERR] handle 1234567 failed\n[ERR] handle 7654321 failed\n"
    )
    assert sfu_log_problems(janus) == {"[ERR] handle N failed": 2}


def test_json_document_has_the_common_head_and_a_summary(tmp_path: Path) -> None:
    said: list[str] = []
    path = tmp_path / "deeper" / "out.json"
    figures = {"summary": {"p99_ms": 3.0}, "n": 4}
    common.write_json(path, "demo_load", figures, {"fd_limit": 1024}, said.append)
    text = path.read_text()
    assert text.endswith("}\n")
    doc = json.loads(text)
    assert list(doc)[:3] == ["benchmark", "date", "machine"]
    assert doc["benchmark"] == "demo_load"
    assert doc["machine"]["fd_limit"] == 1024 and doc["machine"]["cpus"] >= 1
    assert doc["summary"] == {"p99_ms": 3.0} and doc["n"] == 4
    assert said == [f"figures written to {path}"]
    with pytest.raises(ValueError, match="summary"):
        common.write_json(tmp_path / "bad.json", "demo_load", {"n": 4})
    assert not (tmp_path / "bad.json").exists()


def test_only_loopback_targets_are_taken() -> None:
    assert common.loopback_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert common.loopback_url("http://[::1]:8080") == "http://[::1]:8080"
    assert common.loopback_url("http://localhost:1") == "http://localhost:1"
    for url in ("http://10.0.0.1:8080", "http://example.com", "http://192.168.1.2"):
        with pytest.raises(argparse.ArgumentTypeError, match="loopback"):
            common.loopback_url(url)


async def test_command_loop_answers_each_command_until_stop() -> None:
    ours, theirs = multiprocessing.Pipe()
    seen: list[tuple[Any, ...]] = []

    async def run(command: tuple[Any, ...]) -> Any:
        seen.append(command)
        if command[0] == "boom":
            raise RuntimeError("bad phase")
        return command[1] * 2

    for command in (("double", 21), ("boom",), ("double", 2), ("stop",), ("double", 9)):
        ours.send(command)
    await asyncio.wait_for(serve_commands(theirs, run), timeout=10)
    assert ours.recv() == ("ready", None)
    assert ours.recv() == ("ok", 42)
    status, trace = ours.recv()
    assert status == "error" and "RuntimeError: bad phase" in trace
    # A failed command leaves the child serving; nothing after "stop" is run.
    assert ours.recv() == ("ok", 4)
    assert not ours.poll(0.05)
    assert seen == [("double", 21), ("boom",), ("double", 2)]
    ours.close()
    theirs.close()

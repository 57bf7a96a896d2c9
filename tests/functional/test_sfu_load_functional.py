"""The SFU load benchmark runs end to end on its smallest scenario and writes its figures."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.sfu_load import Scenario, parse_scenario
from benchmarks.sfu_media import StreamCount, match_delays, payload_key, rtp_payload
from benchmarks.sfu_report import ScenarioResult, pool_rounds, summarize_stacks


@pytest.mark.slow
def test_tiny_run_writes_summary(tmp_path: Path) -> None:
    out = tmp_path / "sfu_load.json"
    run = subprocess.run(
        [
            *(sys.executable, "-m", "benchmarks.sfu_load", "--scenarios", "1x1"),
            *("--duration", "3", "--skip-janus", "--skip-naive", "--json", str(out)),
            *("--rounds", "2"),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "cpu_per_packet_vs_janus" in run.stdout

    doc = json.loads(out.read_text())
    summary = doc["summary"]
    assert set(summary) == {
        "cpu_per_packet_vs_janus",
        "cpu_per_packet_vs_naive",
        "loss_9x9",
        "delay_p99_ms_9x9",
        "app_delay_p99_ms_9x9",
        "janus_delay_p99_ms_9x9",
    }
    # No baseline and no 9x9 in this run: nothing to compare, and nothing is made up.
    assert all(value is None for value in summary.values()), summary
    assert doc["missing"] == {}
    assert set(doc["results"]) == {"huddle"}
    # Two rounds, pooled: the packets of both, the worst round's delay tail.
    runs = doc["rounds"]["huddle"]["1x1"]
    assert len(runs) == 2
    assert doc["results"]["huddle"]["1x1"]["packets"] == sum(r["packets"] for r in runs)
    assert doc["results"]["huddle"]["1x1"]["delay_p99_ms"] == max(r["delay_p99_ms"] for r in runs)

    result = doc["results"]["huddle"]["1x1"]
    assert result["failed"] is None, result["failed"]
    assert result["streams_expected"] == result["streams_flowing"] == 2
    # ~30 fps of video and 50 packets/s of audio, over about 3 s.
    assert result["packets"] > 100
    assert result["packets_per_s"] > 50
    assert result["mbit_per_s"] > 0.1
    assert 0 <= result["loss"] < 0.05
    assert result["server_cpu_s"] > 0
    assert result["cpu_us_per_packet"] > 0
    assert result["delay_matched"] > 0.9 * result["packets"]
    assert 0 < result["delay_p50_ms"] <= result["delay_p99_ms"] < 1000
    # Receptions carry the kernel's stamp, which comes before the bot's stack sees them.
    assert result["delay_unstamped"] < 0.01 * result["packets"]
    assert result["delay_p50_ms"] <= result["app_delay_p50_ms"]
    assert result["delay_p99_ms"] <= result["app_delay_p99_ms"]
    assert len(result["bot_cores"]) == 2
    assert all(c > 0 for c in result["bot_cores"]), result["bot_cores"]


def test_scenarios_count_forwarded_streams() -> None:
    assert parse_scenario("1x4") == Scenario(1, 4)
    assert parse_scenario("9\u00d79").mesh
    assert Scenario(1, 32).streams == 64
    assert Scenario(1, 1).streams == 2
    # Everyone receives the 8 others' audio and video.
    assert Scenario(9, 9).streams == 9 * 8 * 2
    assert len(Scenario(1, 16).participants()) == 17


def test_sequence_numbers_unwrap_and_count_loss() -> None:
    stream = StreamCount("video")
    seen = [stream.extend(s) for s in (65533, 65534, 65535, 1, 0, 2)]
    assert seen == [65533, 65534, 65535, 65537, 65536, 65538]


def test_delays_match_the_latest_send_before_each_receive() -> None:
    from array import array

    key = payload_key(b"frame")
    # The clip loops: the same payload was sent twice; the receive belongs to the later send.
    sends = [(array("Q", [key, key]), array("d", [10.0, 14.0]))]
    recvs = [(array("Q", [key, key + 1]), array("d", [14.005, 14.1]))]
    delays, unmatched = match_delays(sends, recvs)
    [(received, delay)] = delays
    assert received == 14.005
    assert delay == pytest.approx(0.005)
    assert unmatched == 1


def test_rtp_payload_skips_header_extensions() -> None:
    # V=2, X=1, CC=0; one 4-byte extension word; then the payload.
    header = bytes([0x90, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 0xBE, 0xDE, 0, 1, 1, 2, 3, 4])
    assert bytes(rtp_payload(header + b"payload")) == b"payload"


def test_profile_summary_ranks_functions() -> None:
    text = "process 1:main;run (a.py:1);send (b.py:2) 3\nprocess 1:main;run (a.py:1) 1\n"
    summary = summarize_stacks(text)
    assert summary["samples"] == 4
    assert summary["self"][0] == ("send (b.py)", 0.75)
    assert summary["self_lines"][0] == ("send (b.py:2)", 0.75)
    assert summary["inclusive"][0] == ("run (a.py)", 1.0)


def test_rounds_pool_cpu_and_keep_the_worst_tail() -> None:
    def one(cpu: float, packets: int, loss: float, p50: float, p99: float) -> ScenarioResult:
        return ScenarioResult(
            target="huddle",
            scenario="9x9",
            publishers=9,
            subscribers=9,
            streams_expected=144,
            streams_flowing=144,
            window_s=10.0,
            packets=packets,
            server_cpu_s=cpu,
            loss=loss,
            delay_p50_ms=p50,
            delay_p99_ms=p99,
            bot_cpu_s=[1.0, 2.0],
            bot_cores=[0.1, 0.2],
        )

    pooled = pool_rounds(
        [
            one(3.0, 100_000, 0.0, 1.0, 4.0),
            one(5.0, 100_000, 0.02, 2.0, 9.0),
            one(4.0, 50_000, 0.01, 3.0, 5.0),
        ]
    )
    assert pooled.cpu_us_per_packet == pytest.approx(12.0 / 250_000 * 1e6)
    assert pooled.packets == 250_000 and pooled.window_s == 30.0
    assert pooled.loss == 0.02 and pooled.delay_p99_ms == 9.0 and pooled.delay_p50_ms == 2.0
    assert pooled.bot_cpu_s == [3.0, 6.0]
    broken = dataclasses.replace(one(1.0, 1, 0.0, 1.0, 1.0), failed="bots never connected")
    assert pool_rounds([one(1.0, 1, 0.0, 1.0, 1.0), broken]).failed == "bots never connected"

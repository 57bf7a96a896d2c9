"""chat_load --failover: the timeline read from a phase's per-second latencies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from benchmarks.chat_failover import (
    MasterKiller,
    failover_figures,
    failover_lines,
    failover_summary,
)
from benchmarks.chat_report import PhaseFigures
from benchmarks.chat_servers import CpuUse
from tests.redis_cluster import RedisCluster


def _phase(timeline: list[list[float]], lost: int = 0, extra: int = 0) -> PhaseFigures:
    cpu = CpuUse(1.0, [0.1], 0.1, [0.1], 0.5, 0.0, 0.0, 0.1, 0.1)
    return PhaseFigures(
        kind="paced",
        seconds=12.0,
        offered_per_s=1000.0,
        messages=100,
        messages_per_s=10.0,
        expected=1000,
        deliveries=1000 - lost + extra,
        deliveries_per_s=100.0,
        deliveries_per_server_cpu_s=None,
        deliveries_per_driver_cpu_s=None,
        p50_ms=1.0,
        p99_ms=10.0,
        max_ms=10.0,
        late_share=0.0,
        late_slots=0,
        worst_slots=[],
        lost=lost,
        lost_echo=0,
        duplicated=0,
        out_of_order=0,
        extra=extra,
        stale=0,
        send_errors=7,
        send_lateness_p99_ms=None,
        waited_s=0.1,
        closed={},
        first_errors=[],
        cpu=cpu,
        timeline=timeline,
    )


def _killer(killed: float | None, promoted: float | None) -> MasterKiller:
    killer = MasterKiller(RedisCluster(Path("/nonexistent")))
    killer.start_at = 100.0
    killer.killed = None if killed is None else 100.0 + killed
    killer.promoted = None if promoted is None else 100.0 + promoted
    return killer


# p99 per second: steady, the shard down from 3 s, promoted at 6.4 s, a slow second after.
P99 = [5, 6, 5, 400, 900, 800, 700, 300, 20, 80, 10, 9, 12]


def test_timeline_from_the_kill_to_the_p99_back_under_50_ms() -> None:
    timeline = [[float(i), 100.0, 2.0, float(p99)] for i, p99 in enumerate(P99)]
    figures = failover_figures(_killer(3.0, 6.4), _phase(timeline, extra=3))
    assert figures.killed_at_s == 3.0
    assert figures.promoted_after_kill_s is not None
    assert abs(figures.promoted_after_kill_s - 3.4) < 1e-9
    # Seconds 7.. after the promotion: 8-9 is the first under 50 ms; from 10 on, all are
    # (the straggler second 12, past the 12 s phase, is left out).
    assert figures.p99_back_at_s == 9.0
    assert figures.p99_back_after_promotion_s is not None
    assert abs(figures.p99_back_after_promotion_s - 2.6) < 1e-9
    assert figures.p99_stable_at_s == 11.0
    assert figures.delivered == figures.acknowledged == 1000
    assert figures.unacknowledged_delivered == 3
    summary = failover_summary(figures)
    assert summary["failover_ok"] == 1
    assert summary["failover_send_errors"] == 7
    assert "3.4 s after the kill" in failover_lines(figures, timeline)[0]


def test_a_second_that_delivered_little_is_a_stall_not_a_recovery() -> None:
    # Second 7 after the promotion has a short p99 but a tenth of the usual deliveries.
    timeline = [[float(i), 100.0, 2.0, float(p99)] for i, p99 in enumerate(P99)]
    timeline[7] = [7.0, 10.0, 2.0, 20.0]
    figures = failover_figures(_killer(3.0, 6.4), _phase(timeline))
    assert figures.p99_back_at_s == 9.0


def test_a_lost_acknowledged_message_or_no_promotion_fails_it() -> None:
    timeline = [[float(i), 100.0, 2.0, float(p99)] for i, p99 in enumerate(P99)]
    lost = failover_figures(_killer(3.0, 6.4), _phase(timeline, lost=1))
    assert lost.delivered == 999
    assert failover_summary(lost)["failover_ok"] == 0
    never = failover_figures(_killer(3.0, None), _phase(timeline))
    assert never.promoted_at_s is None and never.p99_back_at_s is None
    assert failover_summary(never)["failover_ok"] == 0


def test_failover_needs_the_cluster_and_a_long_enough_phase() -> None:
    for args, words in (
        (["--failover"], "--failover goes with --redis-cluster"),
        (["--redis-cluster", "--failover", "--duration", "4"], "--duration >= 12"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "benchmarks.chat_load", *args],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert run.returncode == 2, run.stderr
        assert words in run.stderr

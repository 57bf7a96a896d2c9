"""``chat_load --redis-cluster --failover``: a master of the cluster killed during a paced phase.

:class:`MasterKiller` runs beside the phase in a thread: at a share of the phase it
``kill -9``s the master of the cluster's first slots and watches its replica until that
says it is the master. :func:`failover_figures` lays this beside the phase's per-second
latencies (by arrival): when the p99 was first back under the target, from when it stayed
there to the phase's end, and whether every acknowledged message was delivered.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import redis

from benchmarks.chat_driver import PhaseSpec
from benchmarks.chat_report import TARGET_P99_MS, PhaseFigures

if TYPE_CHECKING:
    from tests.redis_cluster import RedisCluster

# The kill comes this far into the phase: latencies before it are the steady state.
KILL_AT_SHARE: Final = 0.25
# The replica's role is read this often, and for this long at most.
PROMOTION_POLL_S: Final = 0.05
PROMOTION_TIMEOUT_S: Final = 30.0
# The target: p99 under TARGET_P99_MS within this long of the promotion.
TARGET_BACK_S: Final = 10.0
# A second counts as back only with at least this share of the phase's median deliveries.
FULL_SECOND_SHARE: Final = 0.5
# Room in the phase for the kill, the node timeout, the promotion and the recovery after.
MIN_FAILOVER_DURATION_S: Final = 12.0


@dataclass
class FailoverFigures:
    """Seconds are after the paced phase's start unless named ``..._after_...``."""

    master_port: int
    replica_port: int
    killed_at_s: float
    promoted_at_s: float | None
    promoted_after_kill_s: float | None
    # The end of the first whole second of arrivals after the promotion whose p99 was under
    # the target, with half the usual deliveries at least; and of the first from which every
    # second to the phase's end was.
    p99_back_at_s: float | None
    p99_back_after_promotion_s: float | None
    p99_stable_at_s: float | None
    acknowledged: int  # deliveries of acknowledged messages, to members other than the sender
    delivered: int  # of those
    # Deliveries of sends that got no acknowledgement (stored, but refused while waiting
    # for the replica; a client's retry with the same client_id stores nothing twice).
    unacknowledged_delivered: int
    lost: int  # acknowledged and never delivered (echoes included)
    duplicated: int
    send_errors: int  # sends refused (unavailable) or timed out while the shard was down
    worst_second_p99_ms: float | None


class MasterKiller:
    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster
        self._thread: threading.Thread | None = None
        self.start_at = 0.0
        self.master_port = self.replica_port = 0
        self.killed: float | None = None
        self.promoted: float | None = None
        self.error: str | None = None

    def start(self, phase: PhaseSpec) -> None:
        self.start_at = phase.start_at
        at = phase.start_at + phase.duration * KILL_AT_SHARE
        self._thread = threading.Thread(target=self._run, args=(at,), daemon=True)
        self._thread.start()

    def join(self) -> None:
        if self._thread is not None:
            self._thread.join(PROMOTION_TIMEOUT_S + 5)

    def _run(self, at: float) -> None:
        try:
            victim = self._cluster.owner(0)
            replica = self._cluster.replicas_of(victim)[0]
            self.master_port, self.replica_port = victim.port, replica.port
            time.sleep(max(0.0, at - time.monotonic()))
            self.killed = time.monotonic()
            self._cluster.kill(victim)
            deadline = self.killed + PROMOTION_TIMEOUT_S
            while time.monotonic() < deadline:
                try:
                    if replica.info("replication").get("role") == "master":
                        self.promoted = time.monotonic()
                        return
                except redis.RedisError:
                    pass
                time.sleep(PROMOTION_POLL_S)
            self.error = f"no promotion of {replica.port} within {PROMOTION_TIMEOUT_S:g} s"
        except (redis.RedisError, LookupError, IndexError, OSError) as exc:
            self.error = f"failover: {exc!r}"


def failover_figures(killer: MasterKiller, phase: PhaseFigures) -> FailoverFigures:
    if killer.killed is None:
        raise RuntimeError(killer.error or "failover: the master was never killed")
    killed = killer.killed - killer.start_at
    promoted = None if killer.promoted is None else killer.promoted - killer.start_at
    back: float | None = None
    stable: float | None = None
    if promoted is not None:
        # [second, deliveries, p50, p99] per whole second of arrivals after the promotion,
        # within the phase (the stragglers after its end are no steady state).
        inside = [row for row in phase.timeline if row[0] + 1 <= phase.seconds]
        after = [row for row in inside if promoted <= row[0]]
        # A second that delivered little is a stall, however short its latencies.
        usual = statistics.median(row[1] for row in inside) if inside else 0.0

        def good(row: list[float]) -> bool:
            return row[3] < TARGET_P99_MS and row[1] >= usual * FULL_SECOND_SHARE

        back = next((row[0] + 1 for row in after if good(row)), None)
        for i, row in enumerate(after):
            if all(good(later) for later in after[i:]):
                stable = row[0] + 1
                break
    worst = max((row[3] for row in phase.timeline), default=None)
    return FailoverFigures(
        master_port=killer.master_port,
        replica_port=killer.replica_port,
        killed_at_s=killed,
        promoted_at_s=promoted,
        promoted_after_kill_s=None if promoted is None else promoted - killed,
        p99_back_at_s=back,
        p99_back_after_promotion_s=(None if back is None or promoted is None else back - promoted),
        p99_stable_at_s=stable,
        acknowledged=phase.expected,
        delivered=phase.expected - phase.lost,
        unacknowledged_delivered=phase.extra,
        lost=phase.lost + phase.lost_echo,
        duplicated=phase.duplicated,
        send_errors=phase.send_errors,
        worst_second_p99_ms=worst,
    )


def failover_lines(f: FailoverFigures, timeline: list[list[float]]) -> list[str]:
    def at(value: float | None) -> str:
        return "never" if value is None else f"{value:.1f} s"

    lines = [
        f"failover (one node on the cluster, paced): master :{f.master_port} killed at "
        f"{f.killed_at_s:.1f} s, replica :{f.replica_port} master at {at(f.promoted_at_s)} "
        f"({at(f.promoted_after_kill_s)} after the kill); the first second with p99 under "
        f"{TARGET_P99_MS:g} ms ended at {at(f.p99_back_at_s)} "
        f"({at(f.p99_back_after_promotion_s)} after the promotion), every second under it "
        f"from {at(f.p99_stable_at_s)} to the phase's end",
        f"failover: {f.acknowledged:,} deliveries of acknowledged messages expected, "
        f"{f.delivered:,} delivered, {f.lost} lost, {f.duplicated} duplicated; "
        f"{f.send_errors} sends refused or timed out while the shard was down, "
        f"{f.unacknowledged_delivered} deliveries of such sends all the same",
        "failover: second | deliveries | p50 ms | p99 ms",
    ]
    lines += [f"  {t:4.0f} | {n:6.0f} | {p50:7.2f} | {p99:7.2f}" for t, n, p50, p99 in timeline]
    return lines


def failover_summary(f: FailoverFigures) -> dict[str, float | int | None]:
    """The ``failover_*`` keys of the summary; ``failover_ok`` is 1 when every acknowledged
    message was delivered once and the p99 was back within the target's time."""
    back = f.p99_back_after_promotion_s
    ok = f.lost == 0 and f.duplicated == 0 and back is not None and back <= TARGET_BACK_S
    return {
        "failover_promoted_after_kill_s": f.promoted_after_kill_s,
        "failover_p99_back_after_promotion_s": back,
        "failover_p99_stable_at_s": f.p99_stable_at_s,
        "failover_acknowledged": f.acknowledged,
        "failover_lost": f.lost,
        "failover_duplicated": f.duplicated,
        "failover_send_errors": f.send_errors,
        "failover_ok": int(ok),
    }

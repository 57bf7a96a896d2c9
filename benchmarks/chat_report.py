"""Figures of the chat load benchmark: per phase and per target, the summary, the report.

``benchmarks.chat_load`` runs the phases; :func:`phase_figures` turns what the drivers sent
and received in one phase into its figures, and :func:`report` prints them beside the bare
relay's, with the CPU shares that tell a server-bound run from a client-bound one.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from benchmarks.chat_driver import DeliveryResult, Kind, PhaseKind, PhaseSpec, SendResult
from benchmarks.chat_servers import CpuUse
from benchmarks.common import (
    DISTURBED,
    SATURATED,
    fmt,
    goal,
    goal_table,
    ms,
    pct,
    percentile,
    ratio,
    table,
)
from benchmarks.histogram import Histogram
from benchmarks.target import NodeUse

SLOT_S: Final = 0.1
TIMELINE_S: Final = 1.0
WORST_SLOTS: Final = 5

TARGET_P99_MS: Final = 50.0
TARGET_RATE: Final = 5000.0
TARGET_VS_BARE: Final = 0.5
TARGET_CLUSTER_VS_SINGLE: Final = 0.8


# --- figures ----------------------------------------------------------------------------


@dataclass
class PhaseFigures:
    kind: PhaseKind
    seconds: float
    offered_per_s: float | None  # paced: the deliveries/s asked for
    messages: int
    messages_per_s: float
    expected: int  # deliveries to members other than the sender
    deliveries: int
    deliveries_per_s: float  # received within the phase's window / its length
    deliveries_per_server_cpu_s: float | None
    deliveries_per_driver_cpu_s: float | None
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    late_share: float | None  # deliveries later than the latency target
    # 100 ms slots (by arrival) whose latest delivery was later than the target, and the
    # worst of them as (seconds after the start, max ms, deliveries): stalls or overload.
    late_slots: int
    worst_slots: list[tuple[float, float, int]]
    lost: int
    lost_echo: int
    duplicated: int
    out_of_order: int
    extra: int
    stale: int
    send_errors: int
    send_lateness_p99_ms: float | None  # paced: how far behind schedule the drivers sent
    waited_s: float  # after the last send, until every expected delivery arrived
    closed: dict[str, int]
    first_errors: list[str]
    cpu: CpuUse
    # --url: what the nodes used and counted over the phase, from their /metrics.
    nodes: NodeUse | None = None
    # Every delivery's latency (benchmarks.histogram), so that shards merge exactly.
    latency_histogram: dict[str, Any] | None = None
    # Per second of arrivals: [seconds after the start, deliveries, p50 ms, p99 ms].
    timeline: list[list[float]] = field(default_factory=list)
    # Per second of sending: [seconds after the start, messages sent, deliveries owed to
    # members other than the sender, of those delivered, lost, senders' own copies lost].
    loss_timeline: list[list[float]] = field(default_factory=list)
    # The wall-clock time (unix seconds) the phase's sends were scheduled to begin.
    started_at: float | None = None
    # One Redis of a run that started it: each command's calls and microseconds over the
    # phase (benchmarks.chat_servers.RedisCommandClock).
    redis_commands: dict[str, tuple[int, int]] | None = None
    # Huddle's nodes: CPU seconds their archiving took over the phase (in the servers'
    # CPU already; benchmarks.chat_servers.ArchiveClock), None for a baseline.
    archive_cpu_s: float | None = None


@dataclass
class TargetResult:
    name: str
    kind: Kind
    nodes: int
    clients: int
    connected: int
    setup_errors: int
    setup_s: float
    phases: dict[str, PhaseFigures]
    first_errors: list[str]
    server_log: dict[str, dict[str, int]]
    server_counters: dict[str, dict[str, float]]
    # The conversations the run made, by kind (rooms of two are direct ones).
    conversation_kinds: dict[str, int] = field(default_factory=dict)

    def phase(self, kind: PhaseKind) -> PhaseFigures | None:
        return self.phases.get(kind)

    def total(self, name: str) -> int:
        return sum(int(getattr(p, name)) for p in self.phases.values())


@dataclass
class Options:
    """A run's settings: the report describes them, the JSON holds them as ``config``."""

    clients: int
    rate: float
    duration: float
    drivers: int
    senders_per_group: int
    seed: int
    api_key: str
    api_secret: str
    skip_two_nodes: bool
    skip_bare: bool


def _slots(start: float, deliveries: list[tuple[float, float]]) -> list[tuple[float, float, int]]:
    """(seconds after ``start``, latest delivery in ms, deliveries) per 100 ms of arrivals."""
    worst: dict[int, float] = {}
    count: Counter[int] = Counter()
    for received, latency in deliveries:
        slot = int((received - start) / SLOT_S)
        worst[slot] = max(worst.get(slot, 0.0), latency)
        count[slot] += 1
    return [(round(i * SLOT_S, 1), worst[i] * 1000, count[i]) for i in sorted(worst)]


def timeline(start: float, arrivals: Sequence[tuple[float, float]]) -> list[list[float]]:
    """[seconds after ``start``, deliveries, p50 ms, p99 ms] per second of arrivals."""
    slots: dict[int, list[float]] = {}
    for received, latency in arrivals:
        slots.setdefault(int((received - start) // TIMELINE_S), []).append(latency)
    return [
        [i * TIMELINE_S, len(v), percentile(v, 50) or 0.0, percentile(v, 99) or 0.0]
        for i, v in ((i, [x * 1000 for x in slots[i]]) for i in sorted(slots))
    ]


def send_second(sent_at: float, start: float) -> int:
    """The second of the phase a message was sent in (the event loop may wake a send a hair
    before the phase's start: it counts in the first second)."""
    return max(0, int((sent_at - start) // TIMELINE_S))


def loss_timeline(
    start: float, sends: Sequence[SendResult], got: Sequence[DeliveryResult]
) -> list[list[float]]:
    """[seconds after ``start``, sent, owed, delivered, lost, own copies lost] per second of
    sending (a message counts in the second it was sent, however late it arrived)."""
    rows: dict[int, list[int]] = {}
    for r in sends:
        for at in r.sent_at:
            rows.setdefault(send_second(at, start), [0, 0, 0, 0, 0])[0] += 1
    for d in got:
        for second, counts in d.by_second.items():
            row = rows.setdefault(second, [0, 0, 0, 0, 0])
            for i, n in enumerate(counts, 1):
                row[i] += n
    return [[s * TIMELINE_S, *rows[s]] for s in sorted(rows)]


def phase_figures(
    phase: PhaseSpec,
    sends: Sequence[SendResult],
    got: Sequence[DeliveryResult],
    cpu: CpuUse,
) -> PhaseFigures:
    """One phase's figures from what every driver sent and received, and the CPU it took."""
    latencies = [x for r in got for x in r.latencies]
    arrivals = [pair for r in got for pair in zip(r.received, r.latencies, strict=True)]
    slots = _slots(phase.start_at, arrivals)
    late_slots = [s for s in slots if s[1] > TARGET_P99_MS]
    lateness = [x for r in sends for x in r.lateness]
    messages = sum(len(r.sent) for r in sends)
    in_window = sum(r.in_window for r in got)
    closed: Counter[str] = Counter()
    for r in got:
        closed.update(r.closed)
    return PhaseFigures(
        kind=phase.kind,
        seconds=phase.duration,
        offered_per_s=None if phase.kind == "saturated" else phase.rate,
        messages=messages,
        messages_per_s=messages / phase.duration,
        expected=sum(r.expected for r in got),
        deliveries=sum(r.deliveries for r in got),
        deliveries_per_s=in_window / phase.duration,
        deliveries_per_server_cpu_s=in_window / cpu.servers_s if cpu.servers_s > 0 else None,
        deliveries_per_driver_cpu_s=in_window / cpu.drivers_s if cpu.drivers_s > 0 else None,
        p50_ms=ms(percentile(latencies, 50)),
        p99_ms=ms(percentile(latencies, 99)),
        max_ms=ms(max(latencies) if latencies else None),
        late_share=(
            sum(x > TARGET_P99_MS / 1000 for x in latencies) / len(latencies) if latencies else None
        ),
        late_slots=len(late_slots),
        worst_slots=sorted(slots, key=lambda s: -s[1])[:WORST_SLOTS],
        lost=sum(r.lost for r in got),
        lost_echo=sum(r.lost_echo for r in got),
        duplicated=sum(r.duplicated for r in got),
        out_of_order=sum(r.out_of_order for r in got),
        extra=sum(r.extra for r in got),
        stale=sum(r.stale for r in got),
        send_errors=sum(r.errors for r in sends),
        send_lateness_p99_ms=ms(percentile(lateness, 99)),
        waited_s=max(r.waited_s for r in got),
        closed=dict(closed),
        first_errors=sorted({r.first_error for r in sends if r.first_error}),
        cpu=cpu,
        latency_histogram=Histogram.of(x * 1000 for x in latencies).to_json(),
        timeline=timeline(phase.start_at, arrivals),
        loss_timeline=loss_timeline(phase.start_at, sends, got),
    )


# --- report -----------------------------------------------------------------------------


def _get(result: TargetResult | None, kind: PhaseKind, name: str) -> float | None:
    phase = result.phase(kind) if result is not None else None
    value = getattr(phase, name) if phase is not None else None
    return None if value is None else float(value)


def _share(result: TargetResult, kind: PhaseKind) -> float | None:
    share = _get(result, kind, "late_share")
    return None if share is None else 100 * share


def _per_node(result: TargetResult, kind: PhaseKind) -> float | None:
    rate = _get(result, kind, "deliveries_per_s")
    return None if rate is None else rate / result.nodes


def _rows(
    one: TargetResult, two: TargetResult | None, bare: TargetResult | None
) -> list[tuple[str, ...]]:
    def row(
        label: str, get: Callable[[TargetResult], float | None], digits: int = 1
    ) -> tuple[str, ...]:
        values = [get(t) if t is not None else None for t in (one, two, bare)]
        return (
            label,
            *(fmt(v, digits) for v in values),
            fmt(ratio(values[0], values[2]), 2),
        )

    def phase(kind: PhaseKind, name: str) -> Callable[[TargetResult], float | None]:
        return lambda t: _get(t, kind, name)

    return [
        row("clients connected", lambda t: t.connected, 0),
        row("paced: deliveries/s", phase("paced", "deliveries_per_s"), 0),
        row("paced: messages/s", phase("paced", "messages_per_s")),
        row("paced: latency p50 (ms)", phase("paced", "p50_ms"), 2),
        row("paced: latency p99 (ms)", phase("paced", "p99_ms"), 2),
        row("paced: latency max (ms)", phase("paced", "max_ms"), 2),
        row(f"paced: share > {TARGET_P99_MS:g} ms (%)", lambda t: _share(t, "paced"), 2),
        row("paced: driver send lateness p99 (ms)", phase("paced", "send_lateness_p99_ms"), 2),
        row("saturated: deliveries/s", phase("saturated", "deliveries_per_s"), 0),
        row("saturated: messages/s", phase("saturated", "messages_per_s")),
        row("  per node", lambda t: _per_node(t, "saturated"), 0),
        row("  per server CPU second", phase("saturated", "deliveries_per_server_cpu_s"), 0),
        row("  per driver CPU second", phase("saturated", "deliveries_per_driver_cpu_s"), 0),
        row("saturated: latency p50 (ms)", phase("saturated", "p50_ms")),
        row("saturated: latency p99 (ms)", phase("saturated", "p99_ms")),
        row("deliveries checked (all phases)", lambda t: t.total("expected"), 0),
        row("lost (to others + echoes)", lambda t: t.total("lost") + t.total("lost_echo"), 0),
        row("duplicated", lambda t: t.total("duplicated"), 0),
        row("out of order", lambda t: t.total("out_of_order"), 0),
        row("unexpected (not accepted)", lambda t: t.total("extra"), 0),
        row("errors (setup + sends)", lambda t: t.setup_errors + t.total("send_errors"), 0),
    ]


def _cluster_table(
    one: TargetResult, two: TargetResult | None, cluster: Sequence[TargetResult]
) -> list[str]:
    """Single Redis beside the cluster, the same load: 1 node each, then 2 nodes each."""
    if not cluster:
        return []
    pairs = [(one, cluster[0], "1 node")]
    if two is not None and len(cluster) > 1:
        pairs.append((two, cluster[1], "2 nodes"))

    def redis_core(t: TargetResult, kind: PhaseKind) -> float | None:
        phase = t.phase(kind)
        return None if phase is None else 100 * phase.cpu.redis_core

    metrics: list[tuple[str, Callable[[TargetResult], float | None], int]] = [
        ("paced: latency p50 (ms)", lambda t: _get(t, "paced", "p50_ms"), 2),
        ("paced: latency p99 (ms)", lambda t: _get(t, "paced", "p99_ms"), 2),
        ("saturated: deliveries/s", lambda t: _get(t, "saturated", "deliveries_per_s"), 0),
        (
            "  per server CPU second",
            lambda t: _get(t, "saturated", "deliveries_per_server_cpu_s"),
            0,
        ),
        ("saturated: redis CPU (% of a core)", lambda t: redis_core(t, "saturated"), 0),
        ("lost (to others + echoes)", lambda t: t.total("lost") + t.total("lost_echo"), 0),
        ("duplicated", lambda t: t.total("duplicated"), 0),
    ]
    rows = []
    for label, get, digits in metrics:
        row = [label]
        for single, clustered, _ in pairs:
            a, b = get(single), get(clustered)
            row += [fmt(a, digits), fmt(b, digits), fmt(ratio(b, a), 2)]
        rows.append(tuple(row))
    header = ["metric"]
    for _, _, what in pairs:
        header += [f"{what}: 1 redis", f"{what}: cluster", "cluster / 1"]
    return [
        "Redis Cluster (3 masters, 3 replicas on this machine, replica-acknowledged sends) "
        "beside one redis-server, the same load:",
        *table(rows, tuple(header)),
        "",
    ]


def _cpu_rows(results: Sequence[TargetResult]) -> list[tuple[str, ...]]:
    return [
        (
            f"{r.name} {kind}",
            f"{p.cpu.wall_s:.1f}",
            "+".join(pct(c) for c in p.cpu.servers_core),
            pct(p.cpu.redis_core),
            "+".join(pct(c) for c in p.cpu.drivers_core),
            pct(p.cpu.machine_busy),
            pct(p.cpu.kernel_busy),
            pct(p.cpu.others_busy),
        )
        for r in results
        for kind, p in r.phases.items()
        if kind != "warm-up"
    ]


def bottleneck(use: CpuUse) -> str:
    """Which process limited a saturated phase, from the CPU shares."""
    servers = "+".join(pct(c) for c in use.servers_core)
    drivers = "+".join(pct(c) for c in use.drivers_core)
    facts = (
        f"server {servers}, redis {pct(use.redis_core)}, drivers {drivers}, "
        f"machine {pct(use.machine_busy)}"
    )
    if any(c >= SATURATED for c in use.servers_core):
        return f"server-bound (a server process uses at most one core): {facts}"
    if use.machine_busy >= SATURATED:
        return f"machine-bound, every core busy, so the servers' own limit is higher: {facts}"
    if any(c >= SATURATED for c in use.drivers_core):
        return f"client-bound, a driver saturated its core (raise --drivers): {facts}"
    if use.redis_core >= SATURATED:
        return f"redis-bound: {facts}"
    return f"no process saturated (latency-bound): {facts}"


def summary(
    one: TargetResult,
    two: TargetResult | None,
    bare: TargetResult | None,
    cluster: Sequence[TargetResult] = (),
) -> dict[str, float | int | None]:
    """The headline figures; ``cluster`` (``--redis-cluster``: the same load on one and two
    nodes on a Redis Cluster) adds ``cluster_*`` and counts in ``lost``/``duplicated``."""
    huddle = [t for t in (one, two, *cluster) if t is not None]
    figures: dict[str, float | int | None] = {
        "p99_ms": _get(one, "paced", "p99_ms"),
        "deliveries_per_s": _get(one, "saturated", "deliveries_per_s"),
        "deliveries_vs_bare": ratio(
            _get(one, "saturated", "deliveries_per_s"), _get(bare, "saturated", "deliveries_per_s")
        ),
        "deliveries_per_cpu_vs_bare": ratio(
            _get(one, "saturated", "deliveries_per_server_cpu_s"),
            _get(bare, "saturated", "deliveries_per_server_cpu_s"),
        ),
        "lost": sum(t.total("lost") + t.total("lost_echo") for t in huddle),
        "duplicated": sum(t.total("duplicated") for t in huddle),
        "out_of_order": sum(t.total("out_of_order") for t in huddle),
        "deliveries_per_s_two_nodes": _get(two, "saturated", "deliveries_per_s"),
        "bare_deliveries_per_s": _get(bare, "saturated", "deliveries_per_s"),
    }
    if cluster:
        c1, c2 = cluster[0], (cluster[1] if len(cluster) > 1 else None)
        figures |= {
            "cluster_vs_single": ratio(
                _get(c1, "saturated", "deliveries_per_s"),
                _get(one, "saturated", "deliveries_per_s"),
            ),
            "cluster_deliveries_per_s": _get(c1, "saturated", "deliveries_per_s"),
            "cluster_p99_ms": _get(c1, "paced", "p99_ms"),
            "cluster_deliveries_per_cpu_vs_single": ratio(
                _get(c1, "saturated", "deliveries_per_server_cpu_s"),
                _get(one, "saturated", "deliveries_per_server_cpu_s"),
            ),
            "cluster_deliveries_per_s_two_nodes": _get(c2, "saturated", "deliveries_per_s"),
        }
    return figures


def targets(figures: dict[str, float | int | None], rate: float) -> dict[str, dict[str, Any]]:
    p99_text = f"< {TARGET_P99_MS:g} at {rate:,.0f} deliveries/s"
    if rate != TARGET_RATE:
        p99_text += f" (the target is at {TARGET_RATE:,.0f})"
    goals = {
        "p99_ms": goal(figures["p99_ms"], p99_text, lambda v: v < TARGET_P99_MS),
        "deliveries_vs_bare": goal(
            figures["deliveries_vs_bare"], f">= {TARGET_VS_BARE}", lambda v: v >= TARGET_VS_BARE
        ),
        "lost": goal(figures["lost"], "0", lambda v: v == 0),
        "duplicated": goal(figures["duplicated"], "0", lambda v: v == 0),
        "out_of_order": goal(figures["out_of_order"], "0", lambda v: v == 0),
    }
    if "cluster_vs_single" in figures:
        goals["cluster_vs_single"] = goal(
            figures["cluster_vs_single"],
            f">= {TARGET_CLUSTER_VS_SINGLE}",
            lambda v: v >= TARGET_CLUSTER_VS_SINGLE,
        )
        goals["cluster_p99_ms"] = goal(
            figures["cluster_p99_ms"], p99_text, lambda v: v < TARGET_P99_MS
        )
    return goals


def report(
    opts: Options,
    sizes: Sequence[int],
    one: TargetResult,
    two: TargetResult | None,
    bare: TargetResult | None,
    cluster: Sequence[TargetResult] = (),
) -> str:
    results = [t for t in (one, two, bare, *cluster) if t is not None]
    fanout = sum(s * (s - 1) for s in sizes) / sum(sizes)
    lines = [
        f"chat_load: N={opts.clients} clients in {len(sizes)} groups "
        f"({', '.join(map(str, sizes))}), {opts.drivers} driver process(es), "
        f"{opts.duration:g} s per phase, {os.cpu_count()} cores",
        f"paced: {opts.rate:,.0f} deliveries/s to members other than the sender (every client "
        f"sends as often, {opts.rate / fanout:,.1f} messages/s); saturated: the first "
        f"{opts.senders_per_group} members of each group send back to back, each waiting for "
        "its own copy; the sender's copy is checked, not counted as a delivery",
        "",
        *table(
            _rows(one, two, bare),
            ("metric", "huddle 1 node", "huddle 2 nodes", "bare", "1 node / bare"),
        ),
        "",
        *_cluster_table(one, two, cluster),
        "CPU over each phase's sending window, share of one core (machine and the columns "
        "after it: of all cores)",
        *table(
            _cpu_rows(results),
            ("phase", "wall s", "servers", "redis", "drivers", "machine", "irq+steal", "others"),
        ),
        "",
    ]
    for result in results:
        saturated = result.phase("saturated")
        if saturated is not None:
            lines.append(f"{result.name} saturated: {bottleneck(saturated.cpu)}")
        for kind, p in result.phases.items():
            if p.cpu.others_busy >= DISTURBED and kind != "warm-up":
                lines.append(
                    f"WARNING {result.name} {kind}: other processes kept "
                    f"{p.cpu.others_busy:.0%} of the machine busy; figures disturbed"
                )
            if kind == "paced" and p.late_slots:
                worst = ", ".join(f"{t:g} s: {ms:.0f} ms" for t, ms, _ in p.worst_slots[:3])
                lines.append(
                    f"{result.name} paced: {p.late_slots} of {p.seconds / SLOT_S:.0f} slots of "
                    f"{SLOT_S * 1000:.0f} ms had a delivery > {TARGET_P99_MS:g} ms; worst: {worst}"
                )
            if p.closed:
                lines.append(f"{result.name} {kind}: connections dropped, by code: {p.closed}")
            if p.stale:
                lines.append(f"{result.name} {kind}: {p.stale} deliveries of an earlier phase")
            lines.extend(f"{result.name} {kind} send error: {e}" for e in p.first_errors)
        lines.extend(f"{result.name} setup error: {e}" for e in result.first_errors)
        for name, problems in result.server_log.items():
            lines.extend(f"{result.name} {name} log: {n} x {m}" for m, n in problems.items())
        for name, counters in result.server_counters.items():
            if counters:
                lines.append(f"{result.name} {name} counters: {counters}")
    lines.extend(goal_table(targets(summary(one, two, bare, cluster), opts.rate), 2))
    return "\n".join(lines)

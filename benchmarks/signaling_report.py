"""Figures of the signaling load benchmark: per phase and per target, the summary, the report.

``benchmarks.signaling_load`` runs the phases; :func:`load_figures` turns the drivers'
round trips of one timed phase into its figures, and :func:`report` prints a target's beside
the bare baseline's, with the CPU shares that tell a server-bound run from a client-bound one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

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
from benchmarks.signaling_driver import Kind, PhaseResult
from benchmarks.signaling_servers import CpuUse

TARGET_RATE_VS_BARE: Final = 0.5
TARGET_KIB_PER_CONNECTION: Final = 30.0
TARGET_P99_MS: Final = 20.0


# --- figures ---------------------------------------------------------------------------


@dataclass
class LoadFigures:
    requests: int
    errors: int
    seconds: float
    rate_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    per_server_cpu_s: float | None  # requests per CPU second of the server process
    cpu: CpuUse
    # Every round trip (benchmarks.histogram): the report's CDF.
    rtt_histogram: dict[str, Any] | None = None


def load_figures(results: list[PhaseResult], cpu: CpuUse) -> LoadFigures:
    """A timed phase's figures from every driver's round trips, and the CPU it took."""
    rtts = [r for res in results for r in res.rtts]
    ok = sum(r.ok for r in results)
    seconds = max(r.ended for r in results) - min(r.started for r in results)
    return LoadFigures(
        requests=ok,
        errors=sum(r.errors for r in results),
        seconds=seconds,
        rate_per_s=ok / seconds if seconds > 0 else 0.0,
        p50_ms=ms(percentile(rtts, 50)),
        p99_ms=ms(percentile(rtts, 99)),
        max_ms=ms(max(rtts) if rtts else None),
        per_server_cpu_s=ok / cpu.server_s if cpu.server_s else None,
        rtt_histogram=Histogram.of(r * 1000 for r in rtts).to_json(),
        cpu=cpu,
    )


@dataclass
class TargetResult:
    kind: Kind
    connected: int
    connect_errors: int
    connect_s: float
    connect_rate_per_s: float
    connect_cpu: CpuUse
    rss_baseline_kib: float | None
    rss_idle_kib: float | None
    rss_after_close_kib: float | None
    kib_per_idle_connection: float | None
    helpers_kib_per_idle_connection: float | None  # the node's redis-server
    latency: LoadFigures
    saturation: LoadFigures
    close_errors: int
    first_errors: list[str]
    server_counters: dict[str, float]
    server_log: dict[str, int]
    # Each timed phase's scheduled wall-clock start (unix seconds): --start-at's connect.
    started_at: dict[str, float] = field(default_factory=dict)


@dataclass
class Options:
    """A run's settings: the report describes them, the JSON holds them as ``config``."""

    n: int
    procs: int
    duration: float
    paced_duration: float
    ping_interval: float
    connect_concurrency: int
    api_key: str
    api_secret: str


# --- report --------------------------------------------------------------------------


def _rows(huddle: TargetResult, bare: TargetResult | None) -> list[tuple[str, str, str, str]]:
    def row(
        label: str, get: Callable[[TargetResult], float | None], digits: int = 1
    ) -> tuple[str, str, str, str]:
        ours = get(huddle)
        theirs = get(bare) if bare is not None else None
        return label, fmt(ours, digits), fmt(theirs, digits), fmt(ratio(ours, theirs), 2)

    return [
        row("connected clients", lambda t: t.connected, 0),
        row("connect rate (conn/s; huddle: + hello)", lambda t: t.connect_rate_per_s),
        row("server RSS per idle connection (KiB)", lambda t: t.kib_per_idle_connection),
        row("redis-server RSS per connection (KiB)", lambda t: t.helpers_kib_per_idle_connection),
        row("paced load (req/s)", lambda t: t.latency.rate_per_s),
        row("paced RTT p50 (ms)", lambda t: t.latency.p50_ms, 2),
        row("paced RTT p99 (ms)", lambda t: t.latency.p99_ms, 2),
        row("paced RTT max (ms)", lambda t: t.latency.max_ms, 2),
        row("saturated request rate (req/s)", lambda t: t.saturation.rate_per_s),
        row("  requests per server CPU second", lambda t: t.saturation.per_server_cpu_s),
        row("saturated RTT p50 (ms)", lambda t: t.saturation.p50_ms),
        row("saturated RTT p99 (ms)", lambda t: t.saturation.p99_ms),
        row("errors (connect, requests, close)", _error_count, 0),
    ]


def _phases(result: TargetResult) -> list[tuple[str, CpuUse]]:
    return [
        ("connect", result.connect_cpu),
        ("paced", result.latency.cpu),
        ("saturated", result.saturation.cpu),
    ]


def _cpu_rows(results: Sequence[TargetResult]) -> list[tuple[str, ...]]:
    return [
        (
            f"{result.kind} {phase}",
            f"{use.wall_s:.1f}",
            pct(use.server_core),
            pct(use.helpers_core),
            "+".join(pct(c) for c in use.drivers_core),
            pct(use.machine_busy),
            pct(use.others_busy),
        )
        for result in results
        for phase, use in _phases(result)
    ]


def _error_count(t: TargetResult) -> float:
    return t.connect_errors + t.latency.errors + t.saturation.errors + t.close_errors


def bottleneck(use: CpuUse) -> str:
    """Which process limited the saturated rate, from the CPU shares of that phase."""
    drivers = "+".join(pct(c) for c in use.drivers_core)
    facts = f"server {pct(use.server_core)}, drivers {drivers}, machine {pct(use.machine_busy)}"
    if use.server_core is not None and use.server_core >= SATURATED:
        return f"server-bound (one server process uses at most one core): {facts}"
    if use.machine_busy >= SATURATED:
        return f"machine-bound, every core busy, so the server's own limit is higher: {facts}"
    if any(c >= SATURATED for c in use.drivers_core):
        return f"client-bound, a driver saturated its core (raise --procs): {facts}"
    return f"no process saturated (latency-bound): {facts}"


def summary(huddle: TargetResult, bare: TargetResult | None) -> dict[str, float | None]:
    return {
        "request_rate_vs_bare": ratio(
            huddle.saturation.rate_per_s, bare.saturation.rate_per_s if bare else None
        ),
        "kib_per_idle_connection": huddle.kib_per_idle_connection,
        "p99_ms": huddle.latency.p99_ms,
    }


def ratios(huddle: TargetResult, bare: TargetResult | None) -> dict[str, float | None]:
    """Huddle's figures over the bare server's (the JSON's ``ratios``)."""

    def versus(get: Callable[[TargetResult], float | None]) -> float | None:
        return ratio(get(huddle), get(bare) if bare is not None else None)

    return {
        "connect_rate": versus(lambda t: t.connect_rate_per_s),
        "request_rate": versus(lambda t: t.saturation.rate_per_s),
        "requests_per_server_cpu_s": versus(lambda t: t.saturation.per_server_cpu_s),
        "paced_p50": versus(lambda t: t.latency.p50_ms),
        "paced_p99": versus(lambda t: t.latency.p99_ms),
    }


def targets(figures: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    rate = figures["request_rate_vs_bare"]
    kib = figures["kib_per_idle_connection"]
    p99 = figures["p99_ms"]
    return {
        "request_rate_vs_bare": goal(
            rate, f">= {TARGET_RATE_VS_BARE}", lambda v: v >= TARGET_RATE_VS_BARE
        ),
        "kib_per_idle_connection": goal(
            kib, f"< {TARGET_KIB_PER_CONNECTION}", lambda v: v < TARGET_KIB_PER_CONNECTION
        ),
        "p99_ms": goal(p99, f"< {TARGET_P99_MS} (paced load)", lambda v: v < TARGET_P99_MS),
    }


def report(opts: Options, huddle: TargetResult, bare: TargetResult | None) -> str:
    results = [huddle] if bare is None else [huddle, bare]
    lines = [
        f"signaling_load: N={opts.n} clients, {opts.procs} driver process(es), "
        f"{opts.paced_duration:g} s paced, {opts.duration:g} s saturated, "
        f"{os.cpu_count()} cores",
        f"paced: every client one ping every {opts.ping_interval:g} s, spread evenly "
        f"(~{opts.n / opts.ping_interval:,.0f} req/s in all); "
        "saturated: every client back to back, one request in flight each",
        "",
        *table(_rows(huddle, bare), ("metric", "huddle", "bare", "ratio")),
        "",
        "CPU, share of one core (machine and others: share of all cores)",
        *table(
            _cpu_rows(results),
            ("phase", "wall s", "server", "redis", "drivers", "machine", "others"),
        ),
        "",
    ]
    for result in results:
        lines.append(f"{result.kind} saturated: {bottleneck(result.saturation.cpu)}")
        for phase, use in _phases(result):
            if use.others_busy >= DISTURBED:
                lines.append(
                    f"WARNING {result.kind} {phase}: other processes kept "
                    f"{use.others_busy:.0%} of the machine busy; figures disturbed"
                )
        lines.extend(f"{result.kind} client error: {e}" for e in result.first_errors)
        lines.extend(f"{result.kind} server log: {n} x {m}" for m, n in result.server_log.items())
    refused = {k: v for k, v in huddle.server_counters.items() if "errors" in k and v}
    if refused:
        lines.append(f"huddle error replies: {refused}")
    lines.extend(goal_table(targets(summary(huddle, bare)), 2))
    return "\n".join(lines)

"""Chat load: group messages through one and two Huddle nodes, beside a bare Redis relay.

    python -m benchmarks.chat_load                          # N=1000, about 2 min
    python -m benchmarks.chat_load --quick --json results/chat.json
    python -m benchmarks.chat_load --redis-cluster --json results/cluster.json
    python -m benchmarks.chat_load --url http://a:8080,http://b:8080 --api-key K --api-secret S

N clients in groups of 10-200 (each client in one group) send messages; every message is
delivered to each member of its group. The script starts a redis-server, two `huddle serve`
nodes on it and a bare aiohttp relay (benchmarks/chat_bare.py) on it, and drives each
target in turn from several driver processes: a paced phase at a fixed rate of deliveries
(latency), then a closed-loop saturated phase (the most deliveries per second it sustains).
Every delivery is checked: lost, repeated and out-of-order messages are counted in every
phase. With ``--redis-cluster`` the Huddle targets run again on a Redis Cluster (3 masters
and 3 replicas) started on this machine. With ``--url`` it drives a running deployment
instead (benchmarks/target.py): no servers started, no baseline. Every phase is bounded in
count and time. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from benchmarks.chat_driver import (
    CLOSE_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    SETTLE_S,
    DeliveryResult,
    Driver,
    DriverPool,
    DriverSpec,
    Kind,
    Member,
    PhaseKind,
    PhaseSpec,
    SendResult,
    StepResult,
    Tally,
    TargetSpec,
)
from benchmarks.chat_failover import (
    MIN_FAILOVER_DURATION_S,
    FailoverFigures,
    MasterKiller,
    failover_figures,
    failover_lines,
    failover_summary,
)
from benchmarks.chat_groups import MAX_GROUP, group_sizes, paced_schedule
from benchmarks.chat_report import (
    Options,
    PhaseFigures,
    TargetResult,
    phase_figures,
    report,
    send_second,
    summary,
    targets,
)
from benchmarks.chat_servers import (
    BASELINES,
    ArchiveClock,
    CpuClock,
    DeploymentCpuClock,
    RedisCommandClock,
    Server,
    node_counters,
    start_servers,
    stop_servers,
    wait_servers,
)
from benchmarks.chat_sweep import (
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_MESSAGE_RATE,
    SweepPoint,
    SweepStep,
    one_to_one_lines,
    parse_sizes,
    plan,
    sweep_summary,
    sweep_table,
    sweep_targets,
)
from benchmarks.chat_xmpp import ejabberd_libs
from benchmarks.common import (
    Say,
    goal_table,
    json_document,
    log_problems,
    raise_fd_limit,
    run_main,
    stderr_say,
    write_json,
)
from benchmarks.procs import bounded, log_tail, stop_process
from benchmarks.progress import nodes_count, phase_bar
from benchmarks.target import (
    Deployment,
    NodeClock,
    add_deployment_args,
    add_start_at_arg,
    counter_changes,
    deployment,
    shard_of,
    start_instant,
)
from huddle.redis_server import spawn_sync

# The entry points, and the driver side under the names the tests import it by.
__all__ = [
    "Driver",
    "DriverSpec",
    "Member",
    "PhaseSpec",
    "Tally",
    "group_sizes",
    "main",
    "paced_schedule",
    "parser",
]

DEFAULT_CLIENTS: Final = 1000
MAX_CLIENTS: Final = 10_000
DEFAULT_RATE: Final = 5000.0  # deliveries/s of the paced phase
# Longer than the node's presence refresh (15 s by default), so that this periodic work is
# always inside the paced window instead of in it by chance.
DEFAULT_DURATION_S: Final = 16.0
# A sweep's steps are compared with each other, so each window holds the node's timers the
# same number of times whatever its phase: one presence refresh (15 s), three expired-device
# sweeps (5 s). A 16 s window held two refreshes now and then.
SWEEP_DURATION_S: Final = 15.0
QUICK_DURATION_S: Final = 2.0  # --quick's phases
MAX_DURATION_S: Final = 60.0
WARMUP_S: Final = 1.0
DEFAULT_SENDERS_PER_GROUP: Final = 5
# How long a driver waits for the deliveries it expects after a phase's last send.
COLLECT_TIMEOUT_S: Final = 20.0
START_DELAY_S: Final = 0.3
# What the connect bar reads of the nodes (before any CPU is counted).
AUTHENTICATED_METRIC: Final = "huddle_ws_authenticated"


# --- running ----------------------------------------------------------------------------


def run_phase(
    pool: DriverPool,
    servers: Sequence[Server],
    redis_pid: int | Sequence[int],
    idle: Sequence[int],
    phase: PhaseSpec,
    target: Deployment | None = None,
    on_start: Callable[[PhaseSpec], None] | None = None,
    redis_url: str | None = None,
) -> PhaseFigures:
    """Send (all drivers from the same instant), then collect and check every delivery;
    ``on_start`` is called as the drivers are told to start (``--failover``'s kill);
    ``redis_url``: what that Redis ran over the phase, by command, goes into the figures."""
    pool.send(("phase", phase))
    if on_start is not None:
        on_start(phase)
    # Before the first send: the nodes' counts of the phase start from zero.
    counts = NodeClock(target.urls) if target is not None else None
    urls = target.urls if target else tuple(s.url for s in servers if s.name not in BASELINES)
    archive = ArchiveClock(urls) if urls else None
    started_at = time.time() + phase.start_at - time.monotonic()
    time.sleep(max(0.0, phase.start_at - time.monotonic()))
    clock: CpuClock | DeploymentCpuClock
    if target is None:
        clock = CpuClock([s.pid for s in servers], redis_pid, pool.pids, idle)
    else:
        clock = DeploymentCpuClock(target.urls, pool.pids)
    timeout = START_DELAY_S + phase.duration + 2 * REQUEST_TIMEOUT_S + 10
    commands = RedisCommandClock(redis_url) if redis_url is not None else None
    # The bar follows the clock alone: a rate read from the nodes' /metrics while their CPU
    # is counted would be paid by them alone (a page costs a node ~2 ms; the baselines have
    # none), some 4 ms a second in Huddle's figures.
    with phase_bar(phase.kind, phase.duration):
        sends: list[SendResult] = pool.collect(timeout, phase.kind)
    cpu = clock.stop()
    ran = commands.stop() if commands is not None else None
    archived = archive.stop() if archive is not None else None
    expected: dict[int, list[tuple[str, int, int, int]]] = {}
    for result in sends:
        for (group, stream, seq, sender), at in zip(result.sent, result.sent_at, strict=True):
            second = send_second(at, phase.start_at)
            expected.setdefault(group, []).append((stream, seq, sender, second))
    got: list[DeliveryResult] = pool.run(
        ("collect", expected, COLLECT_TIMEOUT_S), COLLECT_TIMEOUT_S + SETTLE_S + 10
    )
    figures = phase_figures(phase, sends, got, cpu)
    figures.started_at = started_at
    figures.redis_commands = ran
    figures.archive_cpu_s = archived
    if isinstance(clock, DeploymentCpuClock) and clock.nodes is not None and counts is not None:
        figures.nodes = dataclasses.replace(clock.nodes, counts=counts.counts())
    return figures


def run_target(
    pool: DriverPool,
    target: TargetSpec,
    servers: Sequence[Server],
    redis_pid: int | Sequence[int],
    idle: Sequence[int],
    opts: Options,
    number: int,
    say: Say,
    kinds: Sequence[PhaseKind] = ("warm-up", "paced", "saturated"),
    deployment: Deployment | None = None,
    on_paced: Callable[[PhaseSpec], None] | None = None,
    start_at: float | None = None,
    redis_url: str | None = None,
) -> TargetResult:
    """Connect (Huddle: hello, create the groups, chat.sync), then the phases ``kinds``
    (warm-up, paced, saturated); the first at ``start_at`` (unix seconds, --start-at) when
    given, StartMissed when set up too late for it, the others each as soon as the one before
    has been collected."""
    steps: list[StepResult] = []
    # The nodes' error and close counters before the run: the result keeps this run's.
    urls = deployment.urls if deployment is not None else tuple(s.url for s in servers)
    counted = urls if target.kind == "huddle" else ()
    counters0 = {url: node_counters(url) for url in counted}
    say(f"{target.name}: connecting {opts.clients} clients")
    started = time.monotonic()
    devices = nodes_count(target.urls, AUTHENTICATED_METRIC) if target.kind == "huddle" else None
    before = (devices() if devices else None) or 0.0
    with phase_bar(
        f"{target.name}: connect",
        total=opts.clients,
        done=(lambda: (devices() or before) - before) if devices else None,
        count=devices,
        unit="hellos/s",
    ):
        connected = pool.run(("connect", target), CONNECT_TIMEOUT_S + opts.clients / 20)
    steps += connected
    unconnected = connect_failure(target, connected)
    if unconnected:
        raise RuntimeError(unconnected)
    convs: dict[int, str] = {}
    if target.kind == "huddle":
        created = pool.run(("create",), REQUEST_TIMEOUT_S * len(target.sizes) + 10)
        steps += created
        convs = {g: c for r in created for g, c in r.convs.items()}
        if len(convs) < target.groups:
            error = next((r.first_error for r in created if r.first_error), "")
            raise RuntimeError(f"{target.name}: groups not created: {error}")
        steps += pool.run(("sync", convs), REQUEST_TIMEOUT_S + opts.clients / 20)
    setup_s = time.monotonic() - started
    phases: dict[str, PhaseFigures] = {}
    plan: list[tuple[PhaseKind, float]] = [
        (kind, min(WARMUP_S, opts.duration / 4) if kind == "warm-up" else opts.duration)
        for kind in kinds
    ]
    for i, (kind, duration) in enumerate(plan):
        say(f"{target.name}: {kind} for {duration:g} s")
        first = start_instant(start_at, START_DELAY_S) if i == 0 else None
        phase = PhaseSpec(
            kind=kind,
            prefix=f"t{number}p{i}.",
            start_at=first if first is not None else time.monotonic() + START_DELAY_S,
            duration=duration,
            rate=opts.rate,
            seed=opts.seed + i,
            senders_per_group=opts.senders_per_group,
        )
        on_start = on_paced if kind == "paced" else None
        phases[kind] = run_phase(
            pool, servers, redis_pid, idle, phase, deployment, on_start, redis_url
        )
    changed = {url: counter_changes(counters0[url], node_counters(url)) for url in counted}
    names = {s.url: s.name for s in servers} if deployment is None else {}
    counters = {names.get(url, url): c for url, c in changed.items()}
    closed = pool.run(("close",), CLOSE_TIMEOUT_S + 10)
    steps += closed
    return TargetResult(
        name=target.name,
        kind=target.kind,
        nodes=len(servers) or len(target.urls),
        clients=opts.clients,
        connected=sum(r.ok for r in connected),
        setup_errors=sum(r.errors for r in steps),
        setup_s=setup_s,
        phases=phases,
        first_errors=sorted({r.first_error for r in steps if r.first_error}),
        server_log={s.name: log_problems(s.log_path) for s in servers},
        server_counters=counters,
        conversation_kinds=dict(Counter(KINDS.get(c[:2], "other") for c in convs.values())),
    )


def connect_failure(target: TargetSpec, connected: Sequence[StepResult]) -> str | None:
    """Why the run cannot go on when some of this machine's clients did not connect (their
    deliveries would all be counted lost), with the first error; None when all did."""
    clients = sum(size for g, size in enumerate(target.sizes) if target.has_group(g))
    ok = sum(r.ok for r in connected)
    if ok >= clients:
        return None
    error = next((r.first_error for r in connected if r.first_error), "no error reported")
    return f"{target.name}: {clients - ok} of {clients} clients could not connect: {error}"


def missing_nodes(phases: Mapping[str, PhaseFigures]) -> dict[str, list[str]]:
    """The nodes whose /metrics did not answer over a phase (--url), by phase: their CPU
    and counts are missing from its figures."""
    return {
        kind: list(phase.nodes.missing)
        for kind, phase in phases.items()
        if phase.nodes is not None and phase.nodes.missing
    }


# Conversation ids by kind (docs/protocol.md, "Conversations and roles").
KINDS: Final = {"d-": "direct", "g-": "group", "c-": "channel"}


def run_cluster(
    pool: DriverPool,
    folder: Path,
    opts: Options,
    sizes: tuple[int, ...],
    number: int,
    say: Say,
    failover: bool = False,
) -> tuple[list[TargetResult], tuple[TargetResult, FailoverFigures] | None]:
    """The Huddle targets again (one node, then two unless skipped), on a Redis Cluster of 3
    masters and 3 replicas started here, with its default replica-acknowledged sends; with
    ``failover``, then one more paced phase on node 1 (fresh users) during which a master is
    killed."""
    try:
        from tests.redis_cluster import RedisCluster  # a source checkout's, as the tests use
    except ImportError as exc:
        raise RuntimeError(
            f"--redis-cluster starts the tests' cluster (tests/redis_cluster.py), which only a "
            f"source checkout has: {exc}"
        ) from None

    say("starting a Redis Cluster (3 masters, 3 replicas) and the nodes on it")
    cluster = RedisCluster(folder / "cluster")
    servers: list[Server] = []
    results: list[TargetResult] = []
    failed_over: tuple[TargetResult, FailoverFigures] | None = None
    try:
        cluster.start()
        redis_pids = [pid for pid in (n.pid for n in cluster.nodes) if pid is not None]
        (folder / "on-cluster").mkdir()
        nodes = 1 if opts.skip_two_nodes else 2
        servers = start_servers(
            folder / "on-cluster", cluster.url, opts.api_key, opts.api_secret, nodes, False
        )
        wait_servers(servers)
        plan = [(TargetSpec("huddle", "c1", (servers[0].url,), sizes), servers[:1])]
        if nodes == 2:
            plan.append((TargetSpec("huddle", "c2", tuple(s.url for s in servers), sizes), servers))
        for i, (target, used) in enumerate(plan):
            idle = [s.pid for s in servers if s not in used] + [os.getpid()]
            results.append(run_target(pool, target, used, redis_pids, idle, opts, number + i, say))
        if failover:
            killer = MasterKiller(cluster)
            say("failover: a paced phase on node 1, a master killed a quarter of the way in")
            target = TargetSpec("huddle", "cf", (servers[0].url,), sizes)
            idle = [s.pid for s in servers[1:]] + [os.getpid()]
            result = run_target(
                pool,
                target,
                servers[:1],
                redis_pids,
                idle,
                opts,
                number + len(plan),
                say,
                kinds=("warm-up", "paced"),
                on_paced=killer.start,
            )
            killer.join()
            paced = result.phase("paced")
            assert paced is not None
            failed_over = (result, failover_figures(killer, paced))
    except RuntimeError:
        for server in servers:
            say(f"{server.name} (on the cluster) log:\n{log_tail(server.log_path)}")
        raise
    finally:
        stop_servers(servers)
        cluster.stop()
    return results, failed_over


def _point(step: SweepStep, result: TargetResult) -> SweepPoint:
    paced = result.phase("paced")
    if paced is None:
        return SweepPoint(step.size, 0, 0, server_cpu_s=0.0, seconds=0.0, rate=step.rate)
    cpu = paced.cpu
    # ejabberd's process tree alone: the Redis beside it is the others'.
    redis_s = None if result.kind == "xmpp" else cpu.redis_core * cpu.wall_s
    return SweepPoint(
        size=step.size,
        messages=paced.messages,
        deliveries=paced.expected,
        server_cpu_s=cpu.servers_s + (redis_s or 0.0),
        seconds=cpu.wall_s,
        rate=step.rate,
        redis_cpu_s=redis_s,
        redis_commands=None if redis_s is None else paced.redis_commands,
        archive_cpu_s=paced.archive_cpu_s,
    )


@dataclasses.dataclass
class Swept:
    """A sweep's points on each target, and every run behind them."""

    huddle: list[SweepPoint]
    bare: list[SweepPoint]
    ejabberd: list[SweepPoint]  # rooms of 2 only
    runs: list[TargetResult]


def run_sweep(
    pool: DriverPool,
    servers: Sequence[Server],
    redis_pid: int,
    opts: Options,
    sizes: Sequence[int],
    msg_rate: float,
    max_deliveries: float,
    say: Say,
    redis_url: str | None = None,
) -> Swept:
    """Each step of the sweep's plan on Huddle's first node, then on the bare relay, then
    (rooms of 2) on ejabberd when it runs, paced only; ``redis_url``: their Redis, whose
    commands each step reads."""
    node, bare = servers[0], next((s for s in servers if s.name == "bare"), None)
    xmpp = next((s for s in servers if s.name == "ejabberd"), None)
    swept = Swept([], [], [], [])
    huddle_points, bare_points, results = swept.huddle, swept.bare, swept.runs
    number = 0
    for step in plan(sizes, msg_rate, max_deliveries):
        size = step.size
        rate = step.rate * (size - 1)
        step_opts = dataclasses.replace(opts, clients=sum(step.rooms), rate=rate)
        say(
            f"rooms of {size}: {len(step.rooms)} room(s), {step.rate:,.1f} messages/s, "
            f"{sum(step.rooms)} clients"
        )
        runs: list[tuple[str, Server, list[SweepPoint]]] = [(f"s{step.name}", node, huddle_points)]
        if bare is not None:
            runs.append((f"b{step.name}", bare, bare_points))
        if xmpp is not None and size == 2:
            runs.append((f"e{step.name}", xmpp, swept.ejabberd))
        for name, server, points in runs:
            kind: Kind = "bare" if server is bare else "xmpp" if server is xmpp else "huddle"
            target = TargetSpec(kind, name, (server.url,), step.rooms)
            idle = [s.pid for s in servers if s is not server] + [os.getpid()]
            result = run_target(
                pool,
                target,
                [server],
                redis_pid,
                idle,
                step_opts,
                number,
                say,
                kinds=("warm-up", "paced"),
                redis_url=redis_url,
            )
            number += 1
            results.append(result)
            points.append(_point(step, result))
    return swept


# --- command line -----------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.chat_load",
        description="Group chat through one and two Huddle nodes and a bare Redis pub/sub "
        "relay: delivery latency, deliveries per second, lost/duplicated/out-of-order.",
    )
    ap.add_argument(
        "--clients",
        type=bounded(int, 20, MAX_CLIENTS),
        default=DEFAULT_CLIENTS,
        help="clients, in groups of 10-200",
    )
    ap.add_argument(
        "--rate",
        type=bounded(float, 1, 1_000_000),
        default=DEFAULT_RATE,
        help="deliveries/s of the paced phase (to members other than the sender)",
    )
    ap.add_argument(
        "--duration",
        type=bounded(float, 0.5, MAX_DURATION_S),
        help=f"seconds of the paced and of the saturated phase, each (default "
        f"{DEFAULT_DURATION_S:g}; a --room-sizes step's paced phase: {SWEEP_DURATION_S:g})",
    )
    ap.add_argument(
        "--drivers",
        type=bounded(int, 1, 16),
        default=max(2, min(4, os.cpu_count() or 1)),
        help="driver processes (default: cores, at least 2, at most 4)",
    )
    ap.add_argument(
        "--senders-per-group",
        type=bounded(int, 1, MAX_GROUP),
        default=DEFAULT_SENDERS_PER_GROUP,
        help="members of each group sending back to back in the saturated phase",
    )
    ap.add_argument("--seed", type=int, default=1, help="the paced phase's sending order")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 60 clients, 1,000/s, 2 s phases (or --duration's)",
    )
    ap.add_argument("--skip-two-nodes", action="store_true", help="no two-node run")
    ap.add_argument("--skip-bare", action="store_true", help="no baseline run")
    ap.add_argument(
        "--ejabberd",
        action="store_true",
        help="with --room-sizes: the rooms of 2 on ejabberd too (Debian's package, started "
        "here, XMPP over WebSocket, nothing stored); the summary adds one_to_one_vs_ejabberd",
    )
    ap.add_argument(
        "--redis-cluster",
        action="store_true",
        help="run the Huddle targets again on a Redis Cluster (3 masters, 3 replicas) started "
        "on this machine; the summary adds cluster_vs_single",
    )
    ap.add_argument(
        "--failover",
        action="store_true",
        help="with --redis-cluster: one more paced phase on the cluster, during which a "
        f"master is killed (kill -9); its timeline in the summary (--duration >= "
        f"{MIN_FAILOVER_DURATION_S:g})",
    )
    ap.add_argument(
        "--room-sizes",
        type=_sizes,
        help="sweep these room sizes (e.g. 2,10,100,500) at one message rate on one node and "
        "the bare relay (the smallest also at --message-rate), and fit server CPU as per "
        "message + per delivery + per second",
    )
    ap.add_argument(
        "--message-rate",
        type=bounded(float, 1, 100_000),
        default=DEFAULT_MESSAGE_RATE,
        help="messages/s of the sweep's smallest rooms (every size runs at the rate the "
        "largest can take within --max-deliveries, the smallest at this one too)",
    )
    ap.add_argument(
        "--max-deliveries",
        type=bounded(float, 1, 1_000_000),
        default=DEFAULT_MAX_DELIVERIES,
        help="deliveries/s at most in a sweep step (it sets the sweep's message rate)",
    )
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--report", type=Path, metavar="DIR", help="write DIR/index.html with plots")
    add_deployment_args(ap)
    ap.add_argument(
        "--shard",
        type=shard_of,
        default=(1, 1),
        metavar="I/N",
        help="with --url: run shard I of N (distinct groups, the same schedule) on this "
        "machine; benchmarks.merge adds the shards' JSON up",
    )
    add_start_at_arg(ap, "the first phase (warm-up)")
    return ap


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return parse_sizes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def write_report(folder: Path, doc: dict[str, Any], fd_limit: int, say: Say) -> None:
    from benchmarks.report import write_report as draw  # matplotlib: only when asked

    page = draw(json_document("chat_load", doc, {"fd_limit": fd_limit}), folder)
    say(f"report written to {page}")


def main_deployment(
    args: argparse.Namespace,
    opts: Options,
    target: Deployment,
    sizes: tuple[int, ...],
    fd_limit: int,
    say: Say,
) -> int:
    """--url: one target, the running nodes; nothing started, no baseline."""
    shard, shards = args.shard
    users = target.users if shards == 1 else f"{target.users}s{shard}"
    spec = TargetSpec("huddle", "deployment", target.urls, sizes, users, shard - 1, shards)
    specs = [
        DriverSpec(index=i, drivers=opts.drivers, api_key=opts.api_key, api_secret=opts.api_secret)
        for i in range(opts.drivers)
    ]
    say(f"driving {len(target.urls)} node(s): {', '.join(target.urls)}; users {target.users}-*")
    pool = DriverPool(specs)
    try:
        if args.start_at is not None:
            say(f"the warm-up begins at --start-at {args.start_at:.3f}")
        result = run_target(
            pool, spec, [], 0, [], opts, 0, say, deployment=target, start_at=args.start_at
        )
    except RuntimeError as exc:
        say(str(exc))
        return 1
    finally:
        pool.close(CLOSE_TIMEOUT_S if sys.exc_info()[0] is None else 2.0)
    print(f"chat_load against {', '.join(target.urls)} (server CPU from their /metrics)")
    print(report(opts, sizes, result, None, None))
    missing = missing_nodes(result.phases)
    for kind, urls in missing.items():
        gone = ", ".join(urls)
        print(f"FAILED: {kind}: no /metrics from {gone} (a node gone?); its figures are missing")
    if args.json or args.report:
        figures = summary(result, None, None)
        doc = {
            "config": {
                **dataclasses.asdict(opts),
                "api_secret": None,
                "url": list(target.urls),
                "users": users,
                "shard": [shard, shards],
                "start_at": args.start_at,
            },
            "groups": list(sizes),
            "summary": figures,
            "targets": targets(figures, opts.rate),
            "results": {"deployment": dataclasses.asdict(result)},
        }
        if args.json:
            write_json(args.json, "chat_load", doc, {"fd_limit": fd_limit}, say)
        if args.report:
            write_report(args.report, doc, fd_limit, say)
    return 1 if missing else 0


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    deploy = deployment(ap, args)
    if args.shard != (1, 1) and deploy is None:
        ap.error("--shard goes with --url: the shards load one deployment together")
    if args.quick:
        # Its phases 2 s long unless --duration says otherwise.
        args.clients, args.rate = 60, 1000.0
        args.duration = QUICK_DURATION_S if args.duration is None else args.duration
    if args.duration is None:
        args.duration = SWEEP_DURATION_S if args.room_sizes else DEFAULT_DURATION_S
    if args.room_sizes:
        if args.redis_cluster:
            ap.error("--redis-cluster runs the phases, not a --room-sizes sweep")
        args.skip_two_nodes = True
    if args.ejabberd and (not args.room_sizes or deploy is not None):
        ap.error("--ejabberd goes with --room-sizes, on servers this run starts")
    if args.ejabberd and ejabberd_libs() is None:
        ap.error("--ejabberd: ejabberd is not installed (Debian: apt-get install ejabberd)")
    if args.redis_cluster and deploy is not None:
        ap.error("--redis-cluster starts its own servers: not with --url")
    if args.failover and not args.redis_cluster:
        ap.error("--failover goes with --redis-cluster")
    if args.failover and args.duration < MIN_FAILOVER_DURATION_S:
        ap.error(
            f"--failover needs --duration >= {MIN_FAILOVER_DURATION_S:g}: the promotion and "
            "the recovery after it fall inside the phase"
        )
    opts = Options(
        clients=args.clients,
        rate=args.rate,
        duration=args.duration,
        drivers=args.drivers,
        senders_per_group=args.senders_per_group,
        seed=args.seed,
        api_key="bench" if deploy is None else deploy.api_key,
        api_secret=secrets.token_urlsafe(32) if deploy is None else deploy.api_secret,
        skip_two_nodes=args.skip_two_nodes or deploy is not None,
        skip_bare=args.skip_bare or deploy is not None,
    )
    fd_limit = raise_fd_limit(opts.clients)
    sizes = tuple(group_sizes(opts.clients))

    say = stderr_say(began=time.monotonic())

    if deploy is not None:
        return main_deployment(args, opts, deploy, sizes, fd_limit, say)

    results: dict[str, TargetResult] = {}
    on_cluster: list[TargetResult] = []
    failed_over: tuple[TargetResult, FailoverFigures] | None = None
    swept: Swept | None = None
    with tempfile.TemporaryDirectory(prefix="huddle-chat-bench-") as tmp:
        folder = Path(tmp)
        say("starting redis-server, the nodes and the bare relay")
        redis_proc, redis_url = spawn_sync(folder / "redis")
        servers: list[Server] = []
        pool: DriverPool | None = None
        try:
            nodes = 1 if opts.skip_two_nodes else 2
            servers = start_servers(
                folder,
                redis_url,
                opts.api_key,
                opts.api_secret,
                nodes,
                not opts.skip_bare,
                args.ejabberd,
            )
            specs = [
                DriverSpec(
                    index=i, drivers=opts.drivers, api_key=opts.api_key, api_secret=opts.api_secret
                )
                for i in range(opts.drivers)
            ]
            pool = DriverPool(specs)  # while the servers start
            wait_servers(servers)
            node_servers = [s for s in servers if s.name not in BASELINES]
            if args.room_sizes:
                swept = run_sweep(
                    pool,
                    servers,
                    redis_proc.pid,
                    opts,
                    args.room_sizes,
                    args.message_rate,
                    args.max_deliveries,
                    say,
                    redis_url,
                )
                node_servers = []
            plan: list[tuple[TargetSpec, list[Server]]] = [
                (TargetSpec("huddle", "n1", (node_servers[0].url,), sizes), node_servers[:1])
                for _ in node_servers[:1]
            ]
            if not opts.skip_two_nodes and node_servers:
                urls = tuple(s.url for s in node_servers)
                plan.append((TargetSpec("huddle", "n2", urls, sizes), node_servers))
            if not opts.skip_bare and node_servers:
                bare_server = [s for s in servers if s.name == "bare"]
                plan.append((TargetSpec("bare", "bare", (bare_server[0].url,), sizes), bare_server))
            for number, (target, used) in enumerate(plan):
                idle = [s.pid for s in servers if s not in used] + [os.getpid()]
                results[target.name] = run_target(
                    pool, target, used, redis_proc.pid, idle, opts, number, say
                )
            if args.redis_cluster:
                # The single Redis's servers leave the cores to the cluster's.
                stop_servers(servers)
                stop_process(redis_proc)
                on_cluster, failed_over = run_cluster(
                    pool, folder, opts, sizes, len(plan), say, args.failover
                )
                results |= {r.name: r for r in on_cluster}
                if failed_over is not None:
                    results[failed_over[0].name] = failed_over[0]
        except RuntimeError as exc:
            for server in servers:
                say(f"{server.name} log:\n{log_tail(server.log_path)}")
            say(str(exc))
            return 1
        finally:
            if pool is not None:
                pool.close(CLOSE_TIMEOUT_S if sys.exc_info()[0] is None else 2.0)
            stop_servers(servers)
            stop_process(redis_proc)

    if swept is not None:
        return _sweep_out(args, opts, swept, fd_limit, say)
    one, two, bare = results["n1"], results.get("n2"), results.get("bare")
    print(report(opts, sizes, one, two, bare, on_cluster))
    if failed_over is not None:
        result, timeline = failed_over
        paced = result.phase("paced")
        print("\n".join(failover_lines(timeline, paced.timeline if paced else [])))
    if args.json or args.report:
        figures = summary(one, two, bare, on_cluster)
        if failed_over is not None:
            result, timeline = failed_over
            figures |= failover_summary(timeline)
            figures["lost"] = int(figures["lost"] or 0) + timeline.lost
            figures["duplicated"] = int(figures["duplicated"] or 0) + timeline.duplicated
        doc = {
            "config": {**dataclasses.asdict(opts), "api_secret": None},
            "groups": list(sizes),
            "summary": figures,
            "targets": targets(figures, opts.rate),
            "results": {name: dataclasses.asdict(r) for name, r in results.items()},
        }
        if args.json:
            write_json(args.json, "chat_load", doc, {"fd_limit": fd_limit}, say)
        if args.report:
            write_report(args.report, doc, fd_limit, say)
    return 0


def _sweep_out(
    args: argparse.Namespace,
    opts: Options,
    swept: Swept,
    fd_limit: int,
    say: Say,
) -> int:
    huddle, bare, runs = swept.huddle, swept.bare, swept.runs
    figures: dict[str, Any] = sweep_summary(huddle, bare, swept.ejabberd)
    hud = [r for r in runs if r.kind == "huddle"]
    figures["lost"] = sum(r.total("lost") + r.total("lost_echo") for r in hud)
    figures["duplicated"] = sum(r.total("duplicated") for r in hud)
    figures["out_of_order"] = sum(r.total("out_of_order") for r in hud)
    goals = sweep_targets(figures)
    print(
        f"chat_load sweep: rooms of {', '.join(map(str, args.room_sizes))}, one message rate "
        f"(at most {args.max_deliveries:,.0f} deliveries/s), the smallest also at "
        f"{args.message_rate:g} messages/s, {opts.duration:g} s paced per step; "
        "server CPU = node (or relay) + its Redis = per message + per delivery + per second"
    )
    print("\n".join(sweep_table(huddle, bare, swept.ejabberd)))
    print("\n".join(one_to_one_lines(huddle, bare, swept.ejabberd)))
    print("\n".join(goal_table(goals, 2)))
    if args.json:
        doc = {
            "config": {
                **dataclasses.asdict(opts),
                "api_secret": None,
                "room_sizes": list(args.room_sizes),
                "message_rate": args.message_rate,
                "max_deliveries": args.max_deliveries,
            },
            "summary": figures,
            "targets": goals,
            "points": {
                "huddle": [dataclasses.asdict(p) for p in huddle],
                "bare": [dataclasses.asdict(p) for p in bare],
                "ejabberd": [dataclasses.asdict(p) for p in swept.ejabberd],
            },
            "results": {r.name: dataclasses.asdict(r) for r in runs},
        }
        write_json(args.json, "chat_load", doc, {"fd_limit": fd_limit}, say)
    return 0


if __name__ == "__main__":
    # Run the importable copy, so that the classes pickled to and from the spawned drivers
    # resolve as benchmarks.*, not as __main__.*.
    from benchmarks.chat_load import main as _main

    run_main(_main)

"""Signaling load: N authenticated WebSocket clients on one node, beside a bare aiohttp baseline.

    python -m benchmarks.signaling_load                     # N=2000, starts its own node
    python -m benchmarks.signaling_load --n 200 --json results/signaling.json
    python -m benchmarks.signaling_load --url http://127.0.0.1:8080 --server-pid PID \\
        --api-key KEY --api-secret SECRET
    python -m benchmarks.signaling_load --url http://a:8080,http://b:8080 --api-key K --api-secret S

For each target (the Huddle node, then a bare aiohttp echo server this script starts) it
measures the connect rate, the server's memory per idle connection, ping round trips under a
moderate load (every client one ping per interval) and the request rate under saturation
(every client sending back to back). Load comes from several driver processes whose own CPU
is reported beside the server's, so a client-bound run is never read as the server's limit.
With ``--url`` it drives running nodes instead (benchmarks/target.py; client i on node
i mod N) and runs no baseline; without ``--server-pid`` the server's CPU and memory come
from the nodes' /metrics. Every phase is bounded in count and time. See benchmarks/README.md.

The code: this module runs it (targets, phases, the command line); ``signaling_driver`` is
the driver processes and their pool, ``signaling_servers`` the node and the bare baseline,
their memory and CPU, ``signaling_report`` the figures, the summary and the printed report.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

from benchmarks.common import (
    Say,
    json_document,
    log_problems,
    raise_fd_limit,
    run_main,
    stderr_say,
    write_json,
)
from benchmarks.procs import bounded, run_loop
from benchmarks.progress import nodes_count, phase_bar
from benchmarks.signaling_driver import (
    CLOSE_TIMEOUT_S,
    CONNECT_TIMEOUT_S,
    REQUEST_TIMEOUT_S,
    DriverPool,
    DriverSpec,
    Kind,
    PhaseResult,
)
from benchmarks.signaling_report import (
    Options,
    TargetResult,
    load_figures,
    ratios,
    report,
    summary,
    targets,
)
from benchmarks.signaling_servers import (
    CpuClock,
    CpuUse,
    Server,
    serve_bare,
    server_counters,
    start_bare,
    start_huddle,
)
from benchmarks.target import (
    StartMissed,
    add_deployment_args,
    add_start_at_arg,
    counter_changes,
    deployment,
    shard_of,
    start_instant,
)

DEFAULT_N: Final = 2000
MAX_N: Final = 20_000
MAX_PROCS: Final = 32
MAX_DURATION_S: Final = 60.0
DEFAULT_DURATION_S: Final = 5.0
# Longer than the node's presence refresh interval (15 s by default), so that its periodic
# work falls inside the latency window instead of in it by chance.
DEFAULT_PACED_S: Final = 16.0
DEFAULT_PING_INTERVAL_S: Final = 1.0
DEFAULT_CONNECT_CONCURRENCY: Final = 64
# Drivers start each phase together at a shared monotonic instant this far ahead.
START_DELAY_S: Final = 0.3
# Time for the server to finish the last hellos and free transient buffers before RSS is read.
SETTLE_S: Final = 1.0


# --- running ---------------------------------------------------------------------------


def _specs(kind: Kind, urls: tuple[str, ...], opts: Options, users: str) -> list[DriverSpec]:
    procs = min(opts.procs, opts.n)
    share, extra = divmod(opts.n, procs)
    specs: list[DriverSpec] = []
    first = 0
    for i in range(procs):
        count = share + (1 if i < extra else 0)
        specs.append(
            DriverSpec(
                kind=kind,
                urls=urls,
                index=i,
                first=first,
                count=count,
                total=opts.n,
                connect_concurrency=max(1, opts.connect_concurrency // procs),
                api_key=opts.api_key,
                api_secret=opts.api_secret,
                users=users,
            )
        )
        first += count
    return specs


def _phase_timeout(opts: Options, seconds: float) -> float:
    return seconds + CONNECT_TIMEOUT_S + REQUEST_TIMEOUT_S + opts.n / 50


def run_target(
    kind: Kind,
    server: Server,
    opts: Options,
    say: Say,
    users: str = "bench",
    start_at: float | None = None,
) -> TargetResult:
    """Drive one server through warm-up, connect, idle, paced, saturated and close phases;
    the connect phase at ``start_at`` (unix seconds, --start-at) when given."""
    pool = DriverPool(_specs(kind, server.urls or (server.url,), opts, users))
    started: dict[str, float] = {}  # each timed phase's wall-clock start (unix seconds)

    def timed(name: str, *args: float) -> tuple[list[PhaseResult], CpuUse]:
        """One phase, started by every driver at the same instant, with its CPU use."""
        first = start_instant(start_at, START_DELAY_S) if name == "connect" else None
        begin = first if first is not None else time.monotonic() + START_DELAY_S
        started.setdefault(name, time.time() + begin - time.monotonic())
        seconds = max(opts.duration, opts.paced_duration) if name != "connect" else 0.0
        time.sleep(max(0.0, begin - time.monotonic()))
        clock = CpuClock(server, pool)
        urls = (server.urls or (server.url,)) if kind == "huddle" else ()
        if name == "connect":
            devices = nodes_count(urls, "huddle_ws_authenticated") if urls else None
            before = (devices() if devices else None) or 0.0
            bar = phase_bar(
                f"{kind}: connect",
                total=opts.n,
                done=(lambda: (devices() or before) - before) if devices else None,
                count=devices,
                unit="hellos/s",
            )
        else:
            requests = nodes_count(urls, "huddle_ws_messages_in_total") if urls else None
            bar = phase_bar(f"{kind}: {name}", seconds, count=requests, unit="requests/s")
        with bar:
            results = pool.run((name, begin, *args), _phase_timeout(opts, seconds))
        return results, clock.stop()

    # The node's counters before the run: the result keeps what this run added.
    counters0 = server_counters(server) if kind == "huddle" else {}
    try:
        pool.run(("warmup",), _phase_timeout(opts, 0))
        time.sleep(SETTLE_S)
        rss0, helpers0 = server.rss_kib()

        say(f"{kind}: connecting {opts.n} clients")
        results, connect_cpu = timed("connect")
        connected = sum(r.ok for r in results)
        connect_s = max(r.ended for r in results) - min(r.started for r in results)
        time.sleep(SETTLE_S)
        rss1, helpers1 = server.rss_kib()

        say(f"{kind}: paced pings for {opts.paced_duration:g} s")
        paced, cpu = timed("paced", opts.paced_duration, opts.ping_interval)
        latency = load_figures(paced, cpu)
        say(f"{kind}: saturating for {opts.duration:g} s")
        saturated, cpu = timed("saturate", opts.duration)
        saturation = load_figures(saturated, cpu)
        counters = counter_changes(counters0, server_counters(server)) if kind == "huddle" else {}

        closed = pool.run(("close",), CLOSE_TIMEOUT_S + 10)
        time.sleep(SETTLE_S)
        rss2, _ = server.rss_kib()
    finally:
        # After a failure or Ctrl-C a driver may be mid-phase: do not wait for it to finish.
        pool.close(CLOSE_TIMEOUT_S if sys.exc_info()[0] is None else 2.0)

    def per_connection(before: float | None, after: float | None) -> float | None:
        if before is None or after is None or not connected:
            return None
        return (after - before) / connected

    every = [*results, *paced, *saturated, *closed]
    return TargetResult(
        kind=kind,
        connected=connected,
        connect_errors=sum(r.errors for r in results),
        connect_s=connect_s,
        connect_rate_per_s=connected / connect_s if connect_s > 0 else 0.0,
        connect_cpu=connect_cpu,
        rss_baseline_kib=rss0,
        rss_idle_kib=rss1,
        rss_after_close_kib=rss2,
        kib_per_idle_connection=per_connection(rss0, rss1),
        helpers_kib_per_idle_connection=per_connection(helpers0, helpers1) if helpers0 else None,
        latency=latency,
        saturation=saturation,
        close_errors=sum(r.errors for r in closed),
        first_errors=sorted({r.first_error for r in every if r.first_error}),
        server_counters=counters,
        server_log=log_problems(server.log_path),
        started_at=started,
    )


# --- command line --------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.signaling_load",
        description="N authenticated WebSocket clients against a Huddle node and a bare "
        "aiohttp echo server: connect rate, memory per idle connection, ping RTT, request rate.",
    )
    ap.add_argument("--n", type=bounded(int, 1, MAX_N), default=DEFAULT_N, help="clients")
    ap.add_argument(
        "--procs",
        type=bounded(int, 1, MAX_PROCS),
        default=max(1, min(4, os.cpu_count() or 1)),
        help="driver processes (default: cores, at most 4)",
    )
    ap.add_argument(
        "--duration",
        type=bounded(float, 0.1, MAX_DURATION_S),
        default=DEFAULT_DURATION_S,
        help="seconds of the saturated phase",
    )
    ap.add_argument(
        "--paced-duration",
        type=bounded(float, 0.1, MAX_DURATION_S),
        default=DEFAULT_PACED_S,
        help="seconds of the paced (latency) phase",
    )
    ap.add_argument(
        "--ping-interval",
        type=bounded(float, 0.01, 60),
        default=DEFAULT_PING_INTERVAL_S,
        help="seconds between one client's pings in the paced (latency) phase",
    )
    ap.add_argument(
        "--connect-concurrency",
        type=bounded(int, 1, MAX_N),
        default=DEFAULT_CONNECT_CONCURRENCY,
        help="connects in flight at once, all drivers together",
    )
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--report", type=Path, metavar="DIR", help="write DIR/index.html with plots")
    add_deployment_args(ap)
    ap.add_argument(
        "--server-pid",
        type=int,
        help="with --url naming one node on this machine: its pid, for RSS and CPU (default: "
        "from the nodes' /metrics)",
    )
    ap.add_argument("--skip-bare", action="store_true", help="no baseline run")
    ap.add_argument(
        "--shard",
        type=shard_of,
        default=(1, 1),
        metavar="I/N",
        help="with --url: run shard I of N on this machine (its share of the --n clients, "
        "users of its own, the same phases); benchmarks.merge adds the shards' JSON up",
    )
    add_start_at_arg(ap, "the connect phase")
    ap.add_argument("--bare-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.bare_server is not None:
        run_loop(serve_bare(args.bare_server))
        return 0
    target = deployment(ap, args)
    if args.server_pid is not None and (target is None or len(target.urls) != 1):
        ap.error("--server-pid goes with --url naming one node")
    shard, shards = args.shard
    if shards > 1 and target is None:
        ap.error("--shard goes with --url: the shards load one deployment together")
    # Shard I's share of the N clients: N // shards, the first N % shards one more.
    n = args.n // shards + (1 if shard <= args.n % shards else 0)
    if n < 1:
        ap.error(f"--n {args.n} leaves shard {shard} of {shards} no client")
    opts = Options(
        n=n,
        procs=min(args.procs, n),
        duration=args.duration,
        paced_duration=args.paced_duration,
        ping_interval=args.ping_interval,
        connect_concurrency=args.connect_concurrency,
        api_key=target.api_key if target else "bench",
        api_secret=target.api_secret if target else secrets.token_urlsafe(32),
    )
    fd_limit = raise_fd_limit(opts.n)

    say = stderr_say()
    huddle: TargetResult | None = None
    bare: TargetResult | None = None
    with tempfile.TemporaryDirectory(prefix="huddle-bench-") as tmp:
        folder = Path(tmp)
        if target is not None:
            node = Server(url=target.urls[0], pid=args.server_pid, urls=target.urls)
        else:
            say("starting huddle serve (embedded Redis)")
            node = start_huddle(folder / "node", opts.api_key, opts.api_secret)
        try:
            users = "bench" if target is None else target.users
            if shards > 1:
                users = f"{users}s{shard}"
            huddle = run_target("huddle", node, opts, say, users, args.start_at)
        except StartMissed as exc:
            say(str(exc))
            return 1
        finally:
            node.stop()
        if not args.skip_bare and target is None:
            say("starting the bare aiohttp echo server")
            echo = start_bare(folder)
            try:
                bare = run_target("bare", echo, opts, say)
            finally:
                echo.stop()

    print(report(opts, huddle, bare))
    failures = failed(huddle, bare)
    for failure in failures:
        print(f"FAILED: {failure}")
    if args.json or args.report:
        figures = summary(huddle, bare)
        doc = {
            "config": {
                **dataclasses.asdict(opts),
                "api_secret": None,
                "url": list(target.urls) if target else None,
                "shard": [shard, shards],
                "total_n": args.n,
                "start_at": args.start_at,
            },
            "n": opts.n,
            "summary": figures,
            "targets": targets(figures),
            "huddle": dataclasses.asdict(huddle),
            "bare": dataclasses.asdict(bare) if bare is not None else None,
            "ratios": ratios(huddle, bare),
        }
        if args.json:
            write_json(args.json, "signaling_load", doc, {"fd_limit": fd_limit}, say)
        if args.report:
            from benchmarks.report import write_report  # matplotlib: only when asked

            page = write_report(json_document("signaling_load", doc), args.report)
            say(f"report written to {page}")
    return 1 if failures else 0


def failed(*results: TargetResult | None) -> list[str]:
    """Why the run failed: a target none of whose clients connected (its figures measure
    nothing), with the first error."""
    return [
        f"{r.kind}: no client connected: {r.first_errors[0] if r.first_errors else 'no error'}"
        for r in results
        if r is not None and r.connected == 0
    ]


if __name__ == "__main__":
    # Run the importable copy, so that the classes pickled to and from the spawned drivers
    # resolve as benchmarks.*, not as __main__.*.
    from benchmarks.signaling_load import main as _main

    run_main(_main)

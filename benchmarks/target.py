"""A running deployment as a load generator's target: its nodes, its API key, its /metrics.

With ``--url`` a load generator starts nothing and runs no baseline: it drives the nodes
named (one, or several separated by commas; clients are spread across them in turn), mints
its clients' tokens with ``--api-key`` and ``--api-secret`` (or ``HUDDLE_API_KEY`` and
``HUDDLE_API_SECRET``), and reads what the servers used from each node's ``/metrics``
(``huddle_process_cpu_seconds_total`` by role), since their processes may be on another
machine. :class:`NodeClock` takes those figures over a phase's window, with the node's own
request and event counts, so that a run's figures can be checked against what the nodes
counted.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import json
import math
import os
import secrets
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from benchmarks.common import METRICS_TIMEOUT_S, node_metrics

API_KEY_ENV: Final = "HUDDLE_API_KEY"
API_SECRET_ENV: Final = "HUDDLE_API_SECRET"
MAX_NODES: Final = 64
MAX_SHARDS: Final = 256
# --start-at further ahead than this is taken for a mistake (a date, not a time, mistyped).
MAX_START_AHEAD_S: Final = 24 * 3600.0

CPU_METRIC: Final = "huddle_process_cpu_seconds_total"
RSS_METRIC: Final = "huddle_process_resident_memory_bytes"
# The node's own counts of what it received and sent, for checking a run's figures.
COUNT_METRICS: Final = ("huddle_ws_messages_in_total", "huddle_ws_messages_out_total")


@dataclass(frozen=True)
class Deployment:
    urls: tuple[str, ...]  # client i connects to urls[i % len(urls)]
    api_key: str
    api_secret: str
    # Starts every identity of the run: users of two runs (or two shards) never meet.
    users: str = field(default_factory=lambda: f"load{secrets.token_hex(3)}")

    @property
    def loopback(self) -> bool:
        """Every node on this machine's loopback."""
        return all(_is_loopback(urllib.parse.urlsplit(u).hostname or "") for u in self.urls)


def _is_loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def node_urls(text: str) -> tuple[str, ...]:
    """An argparse type: one node's base URL, or several separated by commas."""
    urls: list[str] = []
    for part in text.split(","):
        url = part.strip().rstrip("/")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise argparse.ArgumentTypeError(
                f"not a node's base URL (http[s]://host[:port]): {part.strip()!r}"
            )
        if parts.query or parts.fragment or parts.path not in ("", "/"):
            raise argparse.ArgumentTypeError(f"a node's base URL has no path or query: {url!r}")
        if url in urls:
            raise argparse.ArgumentTypeError(f"node named twice: {url!r}")
        urls.append(url)
    if len(urls) > MAX_NODES:
        raise argparse.ArgumentTypeError(f"at most {MAX_NODES} nodes")
    return tuple(urls)


def shard_of(text: str) -> tuple[int, int]:
    """An argparse type: ``I/N``, shard I (from 1) of N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shard is I/N, e.g. 1/2: {text!r}") from None
    if not 1 <= i <= n <= MAX_SHARDS:
        raise argparse.ArgumentTypeError(f"a shard I/N needs 1 <= I <= N <= {MAX_SHARDS}")
    return i, n


def start_at_of(text: str) -> float:
    """An argparse type: a wall-clock instant as unix seconds (``1765000000.5``) or an ISO
    8601 time (``2026-12-06T12:00:00Z``, ``...+08:00``; without an offset: UTC), which must
    lie ahead, within MAX_START_AHEAD_S. Every machine's clock is taken to be in sync (NTP)."""
    try:
        when = float(text)
    except ValueError:
        try:
            moment = datetime.datetime.fromisoformat(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a time: {text!r} (unix seconds, or ISO 8601 such as 2026-12-06T12:00:00Z)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        when = moment.timestamp()
    if not math.isfinite(when):
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (unix seconds, or ISO 8601 such as 2026-12-06T12:00:00Z)"
        )
    ahead = when - time.time()
    if ahead <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is {-ahead:.1f} s in the past: the shards would not start together; "
            "give a time ahead of every machine's setup"
        )
    if ahead > MAX_START_AHEAD_S:
        raise argparse.ArgumentTypeError(
            f"{text!r} is {ahead / 3600:.1f} h ahead (at most {MAX_START_AHEAD_S / 3600:g} h)"
        )
    return when


class StartMissed(RuntimeError):
    """The run was not ready by its --start-at: it refuses rather than start late."""


def start_instant(start_at: float | None, ready_s: float = 0.0) -> float | None:
    """``--start-at`` (unix seconds) on this process's monotonic clock, the one its drivers
    and bots schedule by; None without it. StartMissed when less than ``ready_s`` is left
    (the drivers need that long to be told): a shard that starts late would measure its
    phase beside the others' next one."""
    if start_at is None:
        return None
    left = start_at - time.time()
    if left < ready_s:
        raise StartMissed(
            f"not ready by --start-at: set up {ready_s - left:.1f} s too late "
            f"({datetime.datetime.fromtimestamp(start_at, datetime.UTC):%H:%M:%S.%f} UTC); "
            "give every machine more time to set up"
        )
    return time.monotonic() + left


def add_start_at_arg(ap: argparse.ArgumentParser, first: str) -> None:
    ap.add_argument(
        "--start-at",
        type=start_at_of,
        metavar="TIME",
        help=f"with --url: begin {first} at this wall-clock time (unix seconds, or ISO 8601 "
        "such as 2026-12-06T12:00:00Z; UTC without an offset), so that shards on several "
        "machines measure together; a run not set up by then stops with an error (exit 1), "
        "one given a past time refuses to start (exit 2)",
    )


def add_deployment_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--url",
        type=node_urls,
        help="drive these running nodes (base URLs, comma-separated) instead of starting "
        "servers; no baseline runs",
    )
    ap.add_argument("--api-key", help=f"with --url: the deployment's API key (or {API_KEY_ENV})")
    ap.add_argument(
        "--api-secret", help=f"with --url: the deployment's API secret (or {API_SECRET_ENV})"
    )


def deployment(ap: argparse.ArgumentParser, args: argparse.Namespace) -> Deployment | None:
    """The deployment ``--url`` names (None without it); exits with a usage error when the
    key or secret is missing."""
    key = args.api_key or os.environ.get(API_KEY_ENV)
    secret = args.api_secret or os.environ.get(API_SECRET_ENV)
    if args.url is None:
        if args.api_key or args.api_secret:
            ap.error("--api-key and --api-secret go with --url")
        if getattr(args, "start_at", None) is not None:
            ap.error("--start-at goes with --url: it lines up the shards of one deployment's run")
        return None
    if not key or not secret:
        ap.error(
            f"--url needs --api-key and --api-secret (or {API_KEY_ENV} and {API_SECRET_ENV}) "
            "to mint the clients' tokens"
        )
    twice = same_nodes(args.url, {url: node_id(url) for url in args.url})
    if twice:
        ap.error(twice)
    return Deployment(urls=tuple(args.url), api_key=key, api_secret=secret)


def node_id(url: str) -> str | None:
    """The node's name from its ``/healthz`` (``node``; a degraded node's 503 says it too),
    None when it does not answer with one."""
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=METRICS_TIMEOUT_S) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
    except (OSError, ValueError):
        return None
    try:
        node = json.loads(body).get("node")
    except (ValueError, AttributeError):
        return None
    return node if isinstance(node, str) and node else None


def same_nodes(urls: Sequence[str], ids: Mapping[str, str | None]) -> str | None:
    """An error when two of ``urls`` reach the same node (``ids``: each URL's node name,
    None when unknown), which would count its clients, CPU and counts twice."""
    seen: dict[str, str] = {}
    for url in urls:
        node = ids.get(url)
        if node is None:
            continue
        if node in seen:
            return (
                f"--url names node {node!r} twice: {seen[node]} and {url} are the same node "
                "(its CPU and counts would be added twice); name each node once"
            )
        seen[node] = url
    return None


# --- what the nodes say -----------------------------------------------------------------


def _labelled(samples: Mapping[str, float], metric: str, label: str) -> dict[str, float]:
    """``metric{label="x"}`` samples by ``x``."""
    found: dict[str, float] = {}
    head = f'{metric}{{{label}="'
    for name, value in samples.items():
        if name.startswith(head):
            found[name[len(head) :].split('"', 1)[0]] = value
    return found


@dataclass
class NodeSample:
    """One scrape of a node: CPU seconds and RSS bytes by role, and its request/event counts."""

    cpu_s: dict[str, float]
    rss: dict[str, float]
    counts: dict[str, float]
    ok: bool


def sample_node(url: str, counters: tuple[str, ...] = COUNT_METRICS) -> NodeSample:
    """One scrape; ``counters`` are the names (prefixes) of the counts to keep."""
    samples = node_metrics(url, (CPU_METRIC, RSS_METRIC, *counters))
    counts = {k: v for k, v in samples.items() if counters and k.startswith(counters)}
    return NodeSample(
        cpu_s=_labelled(samples, CPU_METRIC, "role"),
        rss=_labelled(samples, RSS_METRIC, "role"),
        counts=counts,
        ok=CPU_METRIC in "".join(samples),
    )


@dataclass
class NodeUse:
    """What the nodes used and counted over a window, from their /metrics."""

    wall_s: float
    node_s: list[float]  # each node with its SFU workers
    redis_s: float  # embedded Redis of every node (0 with an external Redis)
    rss_bytes: list[float]  # each node's processes at the end, every role together
    # What the nodes received and sent, every node together (chat: until the deliveries
    # of the phase were collected).
    counts: dict[str, float]
    missing: list[str]  # nodes whose /metrics did not answer (their figures are left out)


class NodeClock:
    """The nodes' CPU and counts between construction and :meth:`stop`."""

    def __init__(self, urls: Sequence[str], counters: tuple[str, ...] = COUNT_METRICS) -> None:
        self.urls = list(urls)
        self.counters = counters
        self._t0 = time.monotonic()
        self._start = [sample_node(u, counters) for u in self.urls]

    def counts(self) -> dict[str, float]:
        """What the nodes received and sent since the start, every node together."""
        counts: dict[str, float] = {}
        for url, a in zip(self.urls, self._start, strict=True):
            b = sample_node(url, self.counters)
            for name, value in b.counts.items():
                counts[name] = counts.get(name, 0.0) + value - a.counts.get(name, 0.0)
        return {k: v for k, v in counts.items() if v}

    def stop(self) -> NodeUse:
        end = [sample_node(u, self.counters) for u in self.urls]
        wall = max(time.monotonic() - self._t0, 1e-9)
        node_s: list[float] = []
        redis_s = 0.0
        counts: dict[str, float] = {}
        missing: list[str] = []
        for url, a, b in zip(self.urls, self._start, end, strict=True):
            if not (a.ok and b.ok):
                missing.append(url)
                node_s.append(0.0)
                continue

            def delta(role: str, a: NodeSample = a, b: NodeSample = b) -> float:
                return max(0.0, b.cpu_s.get(role, 0.0) - a.cpu_s.get(role, 0.0))

            node_s.append(delta("node") + delta("workers"))
            redis_s += delta("redis")
            for name, value in b.counts.items():
                counts[name] = counts.get(name, 0.0) + value - a.counts.get(name, 0.0)
        return NodeUse(
            wall_s=wall,
            node_s=node_s,
            redis_s=redis_s,
            rss_bytes=[sum(s.rss.values()) for s in end],
            counts={k: v for k, v in counts.items() if v},
            missing=missing,
        )


def counter_changes(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """What the nodes' counters added between two readings: a run's own, not the nodes'
    since they started (those that did not change are left out)."""
    changes = {name: value - before.get(name, 0.0) for name, value in after.items()}
    return {name: value for name, value in changes.items() if value}


def idle_cores(urls: Sequence[str], seconds: float) -> float:
    """The nodes' CPU s/s (every role) over ``seconds`` before any load: their own timers,
    workers and Redis, which a figure per packet or delivery can leave out."""
    clock = NodeClock(urls, ())
    time.sleep(seconds)
    use = clock.stop()
    return (sum(use.node_s) + use.redis_s) / use.wall_s

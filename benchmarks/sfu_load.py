"""SFU load: P publishers x S subscribers through Huddle, Janus 1.1.2 and a naive aiortc relay.

    python -m benchmarks.sfu_load                                  # every scenario, every target
    python -m benchmarks.sfu_load --scenarios 1x1,9x9 --duration 5 --skip-naive --json out.json
    python -m benchmarks.sfu_load --url http://a:8080,http://b:8080 --api-key K --api-secret S

Bots (``benchmarks.sfu_bots``, in several processes) publish a pre-encoded VP8 + Opus clip
(640x360@30, ~0.7 Mbit/s) paced in real time and count what they receive without decoding.
In the NxN scenarios every participant publishes and receives all the others; in 1xS one
publisher is received by S subscribers. Per scenario and target it measures, over a window
that starts once every expected stream flows: forwarded streams, packets/s and Mbit/s (RTP
payload) arriving at the subscribers, the server's CPU (its process and children), CPU per
forwarded packet, loss from sequence numbers (nothing is retransmitted: bots send no NACK),
one-way delay publisher -> server -> subscriber (method in ``benchmarks.sfu_media``), and
the bots' own CPU, so that a bot-bound run is never read as the server's limit.

Targets, all started by this script and stopped at the end: a Huddle node (loopback, embedded
Redis); Janus VideoRoom in a network namespace this script creates (root, Debian's ``janus``
package; reported as missing when it cannot run); the naive relay of ``benchmarks.sfu_naive``
(decodes and re-encodes per subscriber). See benchmarks/README.md.

With ``--url`` the target is a running deployment instead (benchmarks/target.py): nothing
started, no baseline; bot process i signals through node i mod N (the room lives on one of
them: the others relay), the bots take the ICE servers the deployment hands out in
``call.join`` and reach the addresses its SFU announces, and the server's CPU (and the
packets it forwarded) come from the nodes' /metrics.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import psutil

from benchmarks.common import json_document, percentile, run_main, stderr_say, write_json
from benchmarks.histogram import Histogram
from benchmarks.procs import (
    ProcessPool,
    bounded,
    cpu_seconds,
    free_port,
    huddle_command,
    machine_busy_seconds,
    node_env,
    start_healthy,
    stop_process,
)
from benchmarks.progress import nodes_count, phase_bar
from benchmarks.sfu_bots import (
    BotMeasurement,
    BotSpec,
    ParticipantSpec,
    StreamFigures,
    Target,
    bot_main,
)
from benchmarks.sfu_janus import JanusError, JanusServer, Netns, janus_binary
from benchmarks.sfu_media import ensure_fixture, match_delays
from benchmarks.sfu_report import (
    ScenarioResult,
    clip_failure,
    compare,
    failure_line,
    log_problems,
    pool_rounds,
    profile_server,
    report,
    round_lines,
    summary,
    targets,
)
from benchmarks.target import (
    Deployment,
    NodeClock,
    StartMissed,
    add_deployment_args,
    add_start_at_arg,
    deployment,
    shard_of,
    start_instant,
)
from benchmarks.target import idle_cores as nodes_idle_cores

SCENARIOS: Final = ("1x1", "1x4", "1x16", "1x32", "4x4", "9x9")
MAX_PARTICIPANTS: Final = 40
DEFAULT_DURATION_S: Final = 10.0
MAX_DURATION_S: Final = 120.0
DEFAULT_BOT_PROCS: Final = 2
DEFAULT_BOT_NICE: Final = 0
MAX_ROUNDS: Final = 10
MAX_BOT_PROCS: Final = 8
MAX_ROOMS: Final = 64
BOT_START_TIMEOUT_S: Final = 60.0
# Setting up takes longer the more peer connections there are.
SETUP_TIMEOUT_S: Final = 45.0
SETUP_PER_PARTICIPANT_S: Final = 1.0
# Every stream flows within this (a subscriber waits for a key frame: every 2 s in the clip).
FLOWING_TIMEOUT_S: Final = 20.0
# After every stream flows: let start-up bursts (first key frames) pass before measuring.
WARMUP_S: Final = 2.0
# Bots arm their counters for a window that starts this far ahead.
ARM_AHEAD_S: Final = 1.5
STOP_WAIT_S: Final = 20.0
IDLE_SETTLE_S: Final = 1.0
IDLE_S: Final = 3.0

LATE_S: Final = 0.030  # a packet this much later than sent counts as late
STALL_SLOT_S: Final = 0.1
# A stream whose last packet came this long before the window's end had stopped (a node
# gone, a route cut): its loss from sequence numbers alone would read 0.
STALLED_S: Final = 1.0
_SCENARIO_RE: Final = re.compile(r"^(\d+)\s*[x\u00d7]\s*(\d+)$")


# --- scenarios -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """P publishers x S subscribers; P == S > 1 is a room where everyone sends and receives."""

    publishers: int
    subscribers: int

    @property
    def name(self) -> str:
        return f"{self.publishers}x{self.subscribers}"

    @property
    def mesh(self) -> bool:
        return self.publishers == self.subscribers > 1

    def participants(self) -> list[ParticipantSpec]:
        if self.mesh:
            names = [f"p{i}" for i in range(self.publishers)]
            return [ParticipantSpec(n, True, tuple(o for o in names if o != n)) for n in names]
        pubs = [f"p{i}" for i in range(self.publishers)]
        return [ParticipantSpec(n, True, ()) for n in pubs] + [
            ParticipantSpec(f"s{i}", False, tuple(pubs)) for i in range(self.subscribers)
        ]

    @property
    def streams(self) -> int:
        """Forwarded streams (an audio or video track to one subscriber)."""
        return 2 * sum(len(p.subscribes_to) for p in self.participants())


def parse_scenario(text: str) -> Scenario:
    match = _SCENARIO_RE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"scenario {text!r}: expected PxS, e.g. 1x4 or 9x9")
    scenario = Scenario(int(match[1]), int(match[2]))
    if scenario.publishers < 1 or scenario.subscribers < 1:
        raise argparse.ArgumentTypeError(f"scenario {text!r}: at least 1x1")
    if len(scenario.participants()) > MAX_PARTICIPANTS:
        raise argparse.ArgumentTypeError(f"scenario {text!r}: over {MAX_PARTICIPANTS} bots")
    return scenario


# --- processes -----------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    with contextlib.suppress(psutil.Error):
        return [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]
    return [pid]


@dataclass
class Server:
    """A server this script started: its pid (CPU is read on it and its children)."""

    target: Target
    url: str
    pid: int
    ice_address: str
    version: str
    stop: Callable[[], None]
    log_path: Path | None = None
    janus: JanusServer | None = None
    idle_cores: float | None = None  # CPU s/s with no room open: timers, workers, Redis
    urls: tuple[str, ...] = ()  # --url: the deployment's nodes (pid is then 0)
    users: str = ""  # --url: starts the bots' identities


def _stopper(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    return lambda: stop_process(proc)


def start_huddle(folder: Path, api_key: str, api_secret: str) -> Server:
    port = free_port()
    env = node_env(api_key, api_secret)  # the node starts its own redis-server
    cmd = huddle_command(port, folder, "--ice-addresses", "127.0.0.1", "--log-level", "warning")
    log_path = folder / "node.log"
    url = f"http://127.0.0.1:{port}"
    proc = start_healthy(cmd, env, url, log_path)
    from huddle import __version__

    return Server(
        "huddle", url, proc.pid, "127.0.0.1", f"huddle {__version__}", _stopper(proc), log_path
    )


def deployment_server(target: Deployment, ice_address: str) -> Server:
    """--url: the running nodes as the Huddle target; nothing to stop."""
    return Server(
        "huddle",
        target.urls[0],
        0,
        ice_address,
        f"deployment {', '.join(target.urls)}",
        lambda: None,
        urls=target.urls,
        users=target.users,
    )


# The node's count of what it forwarded in a room, for checking the bots' figures.
ROOM_FORWARDED: Final = "huddle_sfu_room_packets_forwarded_total"


class NodesCpuClock:
    """CpuClock's figures for a deployment: the nodes' CPU (every role) from /metrics."""

    def __init__(self, urls: Sequence[str], pool: BotPool, room: str) -> None:
        self._pool = pool
        # Every room of the scenario: their names all start with ``room``.
        self._room = f'{ROOM_FORWARDED}{{room="{room}'
        self._bots = pool.cpu_seconds()
        self._machine = machine_busy_seconds()
        self._nodes = NodeClock(urls, (ROOM_FORWARDED,))
        self.forwarded = 0.0
        self.missing: list[str] = []  # nodes whose /metrics did not answer

    def stop(self) -> tuple[float, float, list[float], float]:
        use = self._nodes.stop()
        self.missing = use.missing
        bots = [b - a for a, b in zip(self._bots, self._pool.cpu_seconds(), strict=True)]
        busy1, all1 = machine_busy_seconds()
        busy0, all0 = self._machine
        self.forwarded = sum(v for k, v in use.counts.items() if k.startswith(self._room))
        server = sum(use.node_s) + use.redis_s
        return use.wall_s, server, bots, (busy1 - busy0) / max(all1 - all0, 1e-9)


def start_naive(folder: Path) -> Server:
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.sfu_naive", "--port", str(port)]
    log_path = folder / "naive.log"
    url = f"http://127.0.0.1:{port}"
    proc = start_healthy(cmd, dict(os.environ), url, log_path)
    import aiortc

    return Server(
        "naive",
        url,
        proc.pid,
        "127.0.0.1",
        f"aiortc {aiortc.__version__} MediaRelay",
        _stopper(proc),
        log_path,
    )


def start_janus(folder: Path) -> Server:
    """Janus in a namespace of its own; ``stop`` kills it and removes the namespace."""
    if janus_binary() is None:
        raise JanusError(
            "`janus` is not installed (scripts/setup.sh --bench, or apt-get install janus)"
        )
    if os.geteuid() != 0:
        raise JanusError("network namespaces need root")
    ns = Netns.create()
    try:
        janus = JanusServer.start(folder, ns)
    except BaseException:
        ns.remove()
        raise

    def stop() -> None:
        try:
            janus.stop()
        finally:
            ns.remove()

    return Server(
        "janus",
        janus.url,
        janus.pid,
        ns.host_addr,
        f"janus {janus.version()}",
        stop,
        janus.log_path,
        janus,
    )


class BotPool(ProcessPool):
    """The bot processes of one scenario, with a pipe each for commands."""

    role = "bot"

    def __init__(self, specs: Sequence[BotSpec]) -> None:
        self.close_errors: list[str] = []
        super().__init__(bot_main, specs, BOT_START_TIMEOUT_S)

    def _stopping(self, deadline: float) -> None:
        # Each bot answers "stop" with what went wrong closing its participants.
        for pipe in self._pipes:
            with contextlib.suppress(OSError, EOFError, ValueError):
                if pipe.poll(max(0.0, deadline - time.monotonic())):
                    status, errors = pipe.recv()
                    if status == "closed":
                        self.close_errors.extend(errors)


class CpuClock:
    def __init__(self, server_pid: int, pool: BotPool) -> None:
        self._server_pid = server_pid
        self._pool = pool
        self._start = self._sample()

    def _sample(self) -> tuple[float, dict[int, float], list[float], float, float]:
        # By pid: a child that appears during the window counts from zero.
        server = {pid: cpu_seconds(pid) for pid in _tree(self._server_pid)}
        return time.monotonic(), server, self._pool.cpu_seconds(), *machine_busy_seconds()

    def stop(self) -> tuple[float, float, list[float], float]:
        """Wall seconds, server CPU seconds, each bot's CPU seconds, machine busy share."""
        t0, s0, b0, busy0, all0 = self._start
        t1, s1, b1, busy1, all1 = self._sample()
        server = sum(v - s0.get(pid, 0.0) for pid, v in s1.items())
        bots = [b - a for a, b in zip(b0, b1, strict=True)]
        return t1 - t0, server, bots, (busy1 - busy0) / max(all1 - all0, 1e-9)


def idle_cores(pid: int) -> float:
    """The server's CPU s/s before any bot arrives (its own timers, workers, Redis)."""
    time.sleep(IDLE_SETTLE_S)
    start = {p: cpu_seconds(p) for p in _tree(pid)}
    began = time.monotonic()
    time.sleep(IDLE_S)
    used = sum(cpu_seconds(p) - start.get(p, 0.0) for p in _tree(pid))
    return used / (time.monotonic() - began)


def _loss(streams: Sequence[StreamFigures], kind: str | None = None) -> float | None:
    chosen = [s for s in streams if kind is None or s.kind == kind]
    expected = sum(s.expected for s in chosen)
    if expected <= 0:
        return None
    return max(0, expected - sum(s.packets for s in chosen)) / expected


def _server_figures(
    result: ScenarioResult,
    server_cpu: float,
    wall: float,
    idle_cores: float | None,
    missing: Sequence[str] = (),
) -> None:
    """The server's CPU over the window into ``result``; ``missing``: the nodes whose
    /metrics did not answer, whose CPU is then unknown (not 0): the scenario fails."""
    result.nodes_missing = list(missing)
    if missing:
        note = (
            f"no /metrics from {', '.join(missing)} over the window (a node gone?): "
            "the server's CPU is missing"
        )
        result.failed = f"{result.failed}; {note}" if result.failed else note
        return
    result.server_cpu_s = server_cpu
    result.server_cores = server_cpu / wall
    if result.packets:
        result.cpu_us_per_packet = server_cpu / result.packets * 1e6
        if idle_cores is not None:
            busy = max(0.0, server_cpu - idle_cores * wall)
            result.marginal_us_per_packet = busy / result.packets * 1e6


def _stalls(late: list[tuple[float, float]], start: float) -> list[list[float]]:
    """The worst moments of the window: [seconds into it, packets late, worst delay (ms)] of
    the 100 ms slots with the most late packets. Late packets bunched in a few slots point
    at stalls (an event loop busy with something else); spread evenly, at a steady overload."""
    slots: dict[int, list[float]] = {}
    for t, d in late:
        slots.setdefault(int((t - start) / STALL_SLOT_S), []).append(d)
    worst = sorted(slots.items(), key=lambda kv: -len(kv[1]))[:5]
    return [[slot * STALL_SLOT_S, len(ds), round(1000 * max(ds), 1)] for slot, ds in worst]


def _figures(
    result: ScenarioResult,
    bots: list[BotMeasurement],
    wall_s: float,
    start: float,
    end: float | None = None,
) -> None:
    """The bots' figures of the window [start, end) (end: start + wall_s) into ``result``;
    streams that stopped before its end fail it."""
    streams = [s for b in bots for s in b.streams if s.packets > 0]
    end = start + wall_s if end is None else end
    stalled = [s.last_at for s in streams if s.last_at is not None and s.last_at < end - STALLED_S]
    result.streams_stalled = len(stalled)
    if stalled:
        result.failed = result.failed or (
            f"{len(stalled)} of {len(streams)} streams stalled: no packet in the last "
            f"{end - max(stalled):.1f} s of the {end - start:.1f} s window (a node gone?)"
        )
    result.window_s = wall_s
    result.streams_flowing = len(streams)
    result.packets = sum(s.packets for s in streams)
    result.packets_expected = sum(s.expected for s in streams)
    result.packets_per_s = result.packets / wall_s
    result.mbit_per_s = sum(s.payload_bytes for s in streams) * 8 / wall_s / 1e6
    result.loss = _loss(streams)
    result.loss_audio = _loss(streams, "audio")
    result.loss_video = _loss(streams, "video")
    for kind in sorted({s.kind for s in streams}):
        expected = sum(s.expected for s in streams if s.kind == kind)
        received = sum(s.packets for s in streams if s.kind == kind)
        result.loss_counts[kind] = [max(0, expected - received), expected]
    sends = [(b.send_keys, b.send_times) for b in bots]
    delays, unmatched = match_delays(sends, [(b.recv_keys, b.recv_stamps) for b in bots])
    result.delay_matched, result.delay_unmatched = len(delays), unmatched
    result.delay_unstamped = sum(b.unstamped for b in bots)
    if delays:
        values = [d for _, d in delays]
        result.delay_histogram = Histogram.of(1000 * v for v in values).to_json()
        result.delay_p50_ms = 1000 * (percentile(values, 50) or 0.0)
        result.delay_p99_ms = 1000 * (percentile(values, 99) or 0.0)
        result.delay_max_ms = 1000 * max(values)
        late = [(t, d) for t, d in delays if d > LATE_S]
        result.delay_over_30ms = len(late) / len(delays)
        result.delay_stalls = _stalls(late, start)
    app_delays, _ = match_delays(sends, [(b.recv_keys, b.recv_times) for b in bots])
    if app_delays:
        values = [d for _, d in app_delays]
        result.app_delay_p50_ms = 1000 * (percentile(values, 50) or 0.0)
        result.app_delay_p99_ms = 1000 * (percentile(values, 99) or 0.0)
    lags = [lag for b in bots for lag in b.loop_lags_ms]
    if lags:
        result.bot_loop_lag_p99_ms = percentile(lags, 99)
        result.bot_loop_lag_max_ms = max(lags)
    result.publisher_max_late_ms = max((b.max_late_ms for b in bots), default=0.0)
    result.publisher_resyncs = sum(b.resyncs for b in bots)
    result.rtx_packets = sum(b.rtx_packets for b in bots)
    result.errors.extend(e for b in bots for e in b.errors)
    unrouted = sum(b.unrouted for b in bots)
    if unrouted:
        result.errors.append(
            f"{unrouted} packets reached a subscriber's transport that aiortc could not route "
            "to a receiver (counted all the same: a client-side fault)"
        )
    unknown = sum(b.unknown_payload_type for b in bots)
    if unknown:
        result.errors.append(f"{unknown} packets of an unnegotiated payload type")


@dataclass
class Options:
    scenarios: list[Scenario]
    duration: float
    bot_procs: int
    bot_nice: int
    api_key: str
    api_secret: str
    fixture: str
    profile: bool
    profile_stacks: Path | None = None
    rooms: int = 1  # copies of each scenario's room run at once
    shard: tuple[int, int] = (1, 1)  # --shard I/N: this machine runs rooms I, I+N, ...

    def my_rooms(self) -> list[int]:
        """The numbers (from 0) of the rooms this shard runs."""
        i, n = self.shard
        return [k for k in range(self.rooms) if k % n == i - 1]


def room_participants(scenario: Scenario, room: int, rooms: int) -> list[ParticipantSpec]:
    """The scenario's participants in room ``room``: with several rooms, their names
    (identities, and the keys of the feeds) say which room they are in."""
    people = scenario.participants()
    if rooms == 1:
        return people
    tag = f"r{room}"
    return [
        ParticipantSpec(f"{tag}{p.name}", p.publishes, tuple(f"{tag}{o}" for o in p.subscribes_to))
        for p in people
    ]


def _bot_specs(
    server: Server, scenario: Scenario, opts: Options, rooms: dict[int, str], janus_room: int
) -> list[BotSpec]:
    """Each room's participants shared among ``--bot-procs`` processes of its own."""
    specs: list[BotSpec] = []
    for number, room in rooms.items():
        people = room_participants(scenario, number, opts.rooms)
        procs = max(1, min(opts.bot_procs, len(people)))
        shares: list[list[ParticipantSpec]] = [[] for _ in range(procs)]
        for i, person in enumerate(people):
            shares[i % procs].append(person)
        for i, share in enumerate(shares):
            specs.append(
                BotSpec(
                    target=server.target,
                    index=len(specs),
                    url=server.urls[i % len(server.urls)] if server.urls else server.url,
                    ice_address=server.ice_address,
                    room=room,
                    janus_room=janus_room,
                    participants=tuple(share),
                    fixture=opts.fixture,
                    api_key=opts.api_key,
                    api_secret=opts.api_secret,
                    nice=opts.bot_nice,
                    users=server.users,
                )
            )
    return specs


def run_scenario(
    server: Server,
    scenario: Scenario,
    opts: Options,
    say: Callable[[str], None],
    profile: bool = False,
    start_at: float | None = None,
) -> ScenarioResult:
    """One scenario's rooms on one target; the window at ``start_at`` (unix seconds,
    --start-at) when given, StartMissed when the bots were not flowing by then."""
    numbers = opts.my_rooms()
    people = len(scenario.participants()) * len(numbers)
    result = ScenarioResult(
        target=server.target,
        scenario=scenario.name,
        publishers=scenario.publishers,
        subscribers=scenario.subscribers,
        streams_expected=scenario.streams * len(numbers),
        rooms=len(numbers),
        bots=people,
    )
    room = f"bench-{scenario.name}-{secrets.token_hex(3)}"
    rooms = {k: room if opts.rooms == 1 else f"{room}-r{k}" for k in numbers}
    janus_room = secrets.randbelow(2**31 - 1000) + 1000
    setup_timeout = SETUP_TIMEOUT_S + SETUP_PER_PARTICIPANT_S * people
    started = time.monotonic()
    if server.janus is not None:
        server.janus.create_room(janus_room, publishers=max(scenario.publishers, 1))
    pool: BotPool | None = None
    try:
        pool = BotPool(_bot_specs(server, scenario, opts, rooms, janus_room))
        feeds: dict[str, str] = {}
        huddle_urls = server.urls or ((server.url,) if server.target == "huddle" else ())
        forwarded = f'{ROOM_FORWARDED}{{room="{room}'
        count = nodes_count(huddle_urls, forwarded) if huddle_urls else None
        with phase_bar(f"{server.target} {scenario.name}: setting up", count=count, unit="pkt/s"):
            for part in pool.run(("publish",), setup_timeout):
                feeds.update(part)
            pool.run(("subscribe", feeds), setup_timeout)
            flowing = pool.run(
                ("wait_flowing", time.monotonic() + FLOWING_TIMEOUT_S), FLOWING_TIMEOUT_S + 10
            )
        seen = sum(f[0] for f in flowing)
        result.setup_s = time.monotonic() - started
        if seen < result.streams_expected:
            result.errors.append(
                f"only {seen} of {result.streams_expected} streams flowing after "
                f"{FLOWING_TIMEOUT_S:g} s; measuring anyway"
            )
        time.sleep(WARMUP_S)

        first = start_instant(start_at, ARM_AHEAD_S)
        start = first if first is not None else time.monotonic() + ARM_AHEAD_S
        result.started_at = time.time() + start - time.monotonic()
        end = start + opts.duration
        say(f"{server.target} {scenario.name}: measuring {opts.duration:g} s")
        pool.send(("measure", start, end))
        time.sleep(max(0.0, start - time.monotonic()))
        clock = (
            NodesCpuClock(server.urls, pool, room) if server.urls else CpuClock(server.pid, pool)
        )
        # The clock alone: the nodes' /metrics read while their CPU is counted would be
        # paid by Huddle alone (Janus has none).
        with phase_bar(f"{server.target} {scenario.name}", opts.duration):
            time.sleep(max(0.0, end - time.monotonic()))
        wall, server_cpu, bots_cpu, machine = clock.stop()
        missing: list[str] = []
        if isinstance(clock, NodesCpuClock):
            result.node_packets_forwarded = clock.forwarded
            missing = clock.missing
        measurements: list[BotMeasurement] = pool.collect(opts.duration + 30, "measure")
        _figures(result, measurements, wall, start, end)
        _server_figures(result, server_cpu, wall, server.idle_cores, missing)
        result.bot_cpu_s = bots_cpu
        result.bot_cores = [b / wall for b in bots_cpu]
        result.machine_busy = machine
        ours = server_cpu + sum(bots_cpu)
        result.others_busy = max(0.0, machine - ours / (wall * (os.cpu_count() or 1)))
        if profile:
            say(f"{server.target} {scenario.name}: profiling the server with py-spy")
            result.profile = profile_server(server.pid, opts.duration, opts.profile_stacks)
    except StartMissed:
        raise
    except Exception as exc:
        result.failed = clip_failure(f"{type(exc).__name__}: {exc}")
        say(f"{server.target} {scenario.name}: FAILED: {failure_line(result.failed)}")
    finally:
        if pool is not None:
            pool.close(STOP_WAIT_S if sys.exc_info()[0] is None else 3.0)
            result.errors.extend(pool.close_errors)
        if server.janus is not None:
            server.janus.destroy_room(janus_room)
    return result


# --- command line --------------------------------------------------------------------


def _scenario_list(text: str) -> list[Scenario]:
    scenarios = [parse_scenario(part) for part in text.split(",") if part.strip()]
    if not scenarios:
        raise argparse.ArgumentTypeError("no scenario given")
    return scenarios


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.sfu_load",
        description="P publishers x S subscribers of pre-encoded VP8+Opus through the Huddle "
        "SFU, Janus 1.1.2 VideoRoom and a naive aiortc relay: CPU per forwarded packet, loss, "
        "delay.",
    )
    ap.add_argument(
        "--scenarios",
        type=_scenario_list,
        default=[parse_scenario(s) for s in SCENARIOS],
        help=f"comma-separated PxS (default: {','.join(SCENARIOS)})",
    )
    ap.add_argument(
        "--duration",
        type=bounded(float, 1, MAX_DURATION_S),
        default=DEFAULT_DURATION_S,
        help="seconds measured per scenario and target",
    )
    ap.add_argument(
        "--bot-procs",
        type=bounded(int, 1, MAX_BOT_PROCS),
        default=DEFAULT_BOT_PROCS,
        help="bot processes per scenario (per room with --rooms)",
    )
    ap.add_argument(
        "--bot-nice",
        type=bounded(int, 0, 19),
        default=DEFAULT_BOT_NICE,
        help="niceness added to the bot processes, so that on a machine they share with the "
        "server under test they take the cores it leaves, as clients on other machines would "
        "(0: compete equally)",
    )
    ap.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="run the server under test on CPU 0 alone and the bots (and this script) on the "
        "other CPUs, as if on separate machines (default: on with 2 or more CPUs)",
    )
    ap.add_argument(
        "--rounds",
        type=bounded(int, 1, MAX_ROUNDS),
        default=1,
        help="run every scenario this many times per target, the targets taking turns; "
        "figures pool the rounds (CPU summed; loss and delay p99 of the worst round)",
    )
    ap.add_argument("--skip-janus", action="store_true", help="no Janus baseline")
    ap.add_argument("--skip-naive", action="store_true", help="no naive relay baseline")
    ap.add_argument(
        "--profile",
        action="store_true",
        help="sample the Huddle node with py-spy for one more window in the largest scenario",
    )
    ap.add_argument(
        "--profile-stacks",
        type=Path,
        metavar="PATH",
        help="with --profile: keep py-spy's collapsed stacks (flamegraph input) here",
    )
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    ap.add_argument("--report", type=Path, metavar="DIR", help="write DIR/index.html with plots")
    add_deployment_args(ap)
    ap.add_argument(
        "--rooms",
        type=bounded(int, 1, MAX_ROOMS),
        default=1,
        help="with --url: run this many copies of each scenario's room at once (each with its "
        "own bots and --bot-procs processes)",
    )
    ap.add_argument(
        "--shard",
        type=shard_of,
        default=(1, 1),
        metavar="I/N",
        help="with --url: run shard I of N on this machine (rooms I, I+N, ... of --rooms, "
        "users of its own, the same scenarios); benchmarks.merge adds the shards' JSON up",
    )
    add_start_at_arg(ap, "the first scenario's measured window")
    ap.add_argument(
        "--ice-address",
        help="with --url: the one address the bots gather ICE candidates on (default: "
        "127.0.0.1 when every node is on loopback, else every interface)",
    )
    return ap


@contextlib.contextmanager
def _affinity(cpus: set[int] | None) -> Iterator[None]:
    """This process (and what it starts meanwhile: a server and its children) on ``cpus``."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _terminate(signum: int, frame: object) -> None:
    # Unwind through the finally blocks: bots, servers and the namespace are removed there.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    deploy = deployment(ap, args)
    if deploy is not None:
        args.skip_janus = args.skip_naive = True
        if args.profile or args.profile_stacks is not None:
            ap.error("--profile samples a node this script started: not with --url")
    elif args.ice_address:
        ap.error("--ice-address goes with --url")
    start_at = args.start_at
    shard, shards = args.shard
    if deploy is None and (args.rooms > 1 or shards > 1):
        ap.error("--rooms and --shard go with --url")
    if shard > args.rooms:
        ap.error(f"--rooms {args.rooms} leaves shard {shard} of {shards} no room")
    if deploy is not None and shards > 1:
        deploy = dataclasses.replace(deploy, users=f"{deploy.users}s{shard}")
    signal.signal(signal.SIGTERM, _terminate)

    say = stderr_say()

    say("preparing the pre-encoded clip")
    fixture = ensure_fixture()
    opts = Options(
        scenarios=args.scenarios,
        duration=args.duration,
        bot_procs=args.bot_procs,
        bot_nice=args.bot_nice,
        api_key="bench" if deploy is None else deploy.api_key,
        api_secret=secrets.token_urlsafe(32) if deploy is None else deploy.api_secret,
        fixture=str(fixture),
        profile=args.profile or args.profile_stacks is not None,
        profile_stacks=args.profile_stacks,
        rooms=args.rooms,
        shard=args.shard,
    )
    biggest = max(opts.scenarios, key=lambda s: s.streams).name
    starters: list[tuple[Target, Callable[[Path], Server]]] = [
        ("huddle", lambda folder: start_huddle(folder, opts.api_key, opts.api_secret))
    ]
    if deploy is not None:
        bots_at = args.ice_address or ("127.0.0.1" if deploy.loopback else "")
        starters = [("huddle", lambda folder: deployment_server(deploy, bots_at))]
        # The nodes are elsewhere (or started apart): nothing to pin.
        args.pin = False
    if not args.skip_janus:
        starters.append(("janus", start_janus))
    if not args.skip_naive:
        starters.append(("naive", start_naive))

    all_cpus = sorted(os.sched_getaffinity(0))
    server_cpus, bot_cpus = (
        ({all_cpus[0]}, set(all_cpus[1:])) if args.pin and len(all_cpus) >= 2 else (None, None)
    )
    if bot_cpus:
        os.sched_setaffinity(0, bot_cpus)  # bots are spawned from here: they inherit it
    missing: dict[str, str] = {}
    versions: dict[str, str] = {}
    server_logs: dict[str, dict[str, int]] = {}
    idle: dict[str, float] = {}
    rounds: dict[str, dict[str, list[ScenarioResult]]] = {}
    with tempfile.TemporaryDirectory(prefix="huddle-sfu-bench-") as tmp:
        # Every target is started first and stays up (idle ones cost next to nothing), so
        # that the rounds can take turns: drift in the machine's speed then falls on all.
        servers: dict[str, Server] = {}
        try:
            for target, start in starters:
                say(f"starting {target}")
                try:
                    with _affinity(server_cpus):
                        server = start(Path(tmp) / target)
                except Exception as exc:
                    missing[target] = failure_line(f"{type(exc).__name__}: {exc}")[:300]
                    say(f"{target} MISSING: {missing[target]}")
                    continue
                servers[target] = server
                versions[target] = server.version
                if server.urls:
                    server.idle_cores = nodes_idle_cores(server.urls, IDLE_S)
                else:
                    server.idle_cores = idle_cores(server.pid)
                idle[target] = server.idle_cores
            for index in range(args.rounds):
                if args.rounds > 1:
                    say(f"round {index + 1} of {args.rounds}")
                for name, server in servers.items():
                    by_scenario = rounds.setdefault(name, {})
                    for scenario in opts.scenarios:
                        profile = (
                            opts.profile
                            and index == 0
                            and name == "huddle"
                            and scenario.name == biggest
                        )
                        # --start-at: the first window; the others as soon as ready.
                        at, args.start_at = args.start_at, None
                        result = run_scenario(server, scenario, opts, say, profile, at)
                        by_scenario.setdefault(scenario.name, []).append(result)
        except StartMissed as exc:
            say(str(exc))
            return 1
        finally:
            for name, server in servers.items():
                server.stop()
                server_logs[name] = log_problems(server.log_path)
    results: dict[str, dict[str, ScenarioResult]] = {
        target: {name: pool_rounds(runs) for name, runs in by_scenario.items()}
        for target, by_scenario in rounds.items()
    }

    names = [s.name for s in opts.scenarios]
    placement = (
        f"server on CPU {sorted(server_cpus)}, bots on {sorted(bot_cpus or [])}"
        if server_cpus
        else "server and bots share every CPU"
    )
    print(
        report(
            results,
            names,
            opts.duration,
            opts.bot_procs,
            missing,
            versions,
            idle,
            opts.bot_nice,
            placement,
        )
    )
    for line in round_lines(rounds):
        print(line)
    for name, problems in server_logs.items():
        for message, n in problems.items():
            print(f"{name} server log: {n} x {message}")
    if args.json or args.report:
        figures = summary(results)
        doc = {
            "config": {
                "scenarios": [s.name for s in opts.scenarios],
                "duration_s": opts.duration,
                "bot_procs": opts.bot_procs,
                "bot_nice": opts.bot_nice,
                "rounds": args.rounds,
                "server_cpus": sorted(server_cpus or []),
                "bot_cpus": sorted(bot_cpus or []),
                "fixture": Path(opts.fixture).name,
                "skip_janus": args.skip_janus,
                "skip_naive": args.skip_naive,
                "url": list(deploy.urls) if deploy is not None else None,
                "rooms": opts.rooms,
                "shard": list(opts.shard),
                "users": deploy.users if deploy is not None else None,
                "start_at": start_at,
            },
            "versions": versions,
            "server_idle_cores": idle,
            "missing": missing,
            "summary": figures,
            "targets": targets(figures),
            "compared_scenarios": {
                other: compare(results, other)[1] for other in ("janus", "naive")
            },
            "results": {
                target: {name: dataclasses.asdict(r) for name, r in by_scenario.items()}
                for target, by_scenario in results.items()
            },
            "rounds": {
                target: {name: [dataclasses.asdict(r) for r in runs] for name, runs in by.items()}
                for target, by in rounds.items()
            }
            if args.rounds > 1
            else {},
            "server_logs": server_logs,
        }
        if args.json:
            write_json(args.json, "sfu_load", doc, say=say)
        if args.report:
            from benchmarks.report import write_report  # matplotlib: only when asked

            say(f"report written to {write_report(json_document('sfu_load', doc), args.report)}")
    return 1 if failed(results) else 0


def failed(results: Mapping[str, Mapping[str, ScenarioResult]]) -> bool:
    """Whether any scenario failed on any target (the exit status is then 1)."""
    return any(r.failed is not None for by in results.values() for r in by.values())


if __name__ == "__main__":
    # Run the importable copy, so that the classes pickled to and from the spawned bots
    # resolve as benchmarks.* rather than __main__.*.
    from benchmarks.sfu_load import main as _main

    run_main(_main)

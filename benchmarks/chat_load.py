"""Chat load: group messages through one and two Huddle nodes, beside a bare Redis relay.

    python -m benchmarks.chat_load                          # N=1000, about 2 min
    python -m benchmarks.chat_load --quick --json results/chat.json

N clients in groups of 10-200 (each client in one group) send messages; every message is
delivered to each member of its group. The script starts a redis-server, two `huddle serve`
nodes on it and a bare aiohttp relay (benchmarks/chat_bare.py) on it, and drives each
target in turn from several driver processes: a paced phase at a fixed rate of deliveries
(latency), then a closed-loop saturated phase (the most deliveries per second it sustains).
Every delivery is checked: lost, repeated and out-of-order messages are counted in every
phase. Loopback only; every phase is bounded in count and time. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import multiprocessing
import os
import platform
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final, Literal

import aiohttp
import psutil

from benchmarks.chat_bare import BareClient, BareFrame
from benchmarks.procs import (
    SERVER_START_TIMEOUT_S,
    bounded,
    cpu_seconds,
    free_port,
    log_tail,
    machine_busy_seconds,
    start_logged,
    stop_process,
    wait_healthy,
)
from benchmarks.signaling_load import percentile, raise_fd_limit
from chat import wire as w
from huddle.client import HuddleClient
from huddle.redis_server import spawn_sync
from signaling.auth import mint_token
from signaling.protocol import Event

Kind = Literal["huddle", "bare"]
PhaseKind = Literal["warm-up", "paced", "saturated"]

DEFAULT_CLIENTS: Final = 1000
MAX_CLIENTS: Final = 10_000
DEFAULT_RATE: Final = 5000.0  # deliveries/s of the paced phase
# Longer than the node's presence refresh (15 s by default), so that this periodic work is
# always inside the paced window instead of in it by chance.
DEFAULT_DURATION_S: Final = 16.0
MAX_DURATION_S: Final = 60.0
WARMUP_S: Final = 1.0
DEFAULT_SENDERS_PER_GROUP: Final = 5
# Group sizes, taken in turn until the N clients are placed (the last one takes the rest).
GROUP_SIZES: Final = (10, 20, 50, 100, 200)
MIN_GROUP: Final = 10
MAX_GROUP: Final = 200
# A real message's words: the text is indexed for search like any other.
TEXT: Final = "see you all at the weekly planning call, agenda is in the doc"
TOKEN_TTL_S: Final = 3600
CONNECT_CONCURRENCY: Final = 64  # all drivers together
CONNECT_TIMEOUT_S: Final = 20.0
REQUEST_TIMEOUT_S: Final = 10.0
# How long a driver waits for the deliveries it expects after a phase's last send.
COLLECT_TIMEOUT_S: Final = 20.0
# Repeats arriving after the last expected delivery would be missed without this pause.
SETTLE_S: Final = 0.3
START_DELAY_S: Final = 0.3
CLOSE_TIMEOUT_S: Final = 30.0
QUEUE_DRAIN_S: Final = 0.5
SATURATED: Final = 0.85  # a process above this share of one core is taken as saturated
DISTURBED: Final = 0.15  # others above this share of the machine disturb a phase
SLOT_S: Final = 0.1
WORST_SLOTS: Final = 5

TARGET_P99_MS: Final = 50.0
TARGET_RATE: Final = 5000.0
TARGET_VS_BARE: Final = 0.5


# --- groups and schedule ----------------------------------------------------------------


def group_sizes(n: int) -> list[int]:
    """Sizes from GROUP_SIZES in turn, summing to ``n``; the rest is folded into the last."""
    sizes: list[int] = []
    left = n
    while left > 0:
        take = min(GROUP_SIZES[len(sizes) % len(GROUP_SIZES)], left)
        rest = left - take
        if 0 < rest < MIN_GROUP:
            take = take + rest if take + rest <= MAX_GROUP else take - (MIN_GROUP - rest)
        sizes.append(take)
        left -= take
    return sizes


def group_of(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """(group, rank in it) of each client number; groups hold consecutive numbers."""
    return [(g, rank) for g, size in enumerate(sizes) for rank in range(size)]


def paced_schedule(
    sizes: Sequence[int], rate: float, duration: float, seed: int
) -> list[tuple[float, int]]:
    """(seconds after the start, sender) of every message of a paced phase.

    Every client sends in turn (a shuffled order, repeated), so each sends as often as any
    other; a message is due when the deliveries of the ones before it reach ``rate`` x time,
    so deliveries to other members, not messages, arrive at ``rate``."""
    fanout = [size - 1 for size in sizes for _ in range(size)]
    order = list(range(len(fanout)))
    random.Random(seed).shuffle(order)
    schedule: list[tuple[float, int]] = []
    delivered = 0
    while delivered / rate < duration:
        sender = order[len(schedule) % len(order)]
        schedule.append((delivered / rate, sender))
        delivered += max(1, fanout[sender])
    return schedule


# --- driver processes -------------------------------------------------------------------


@dataclass(frozen=True)
class DriverSpec:
    index: int
    drivers: int
    api_key: str
    api_secret: str


@dataclass(frozen=True)
class TargetSpec:
    kind: Kind
    name: str
    urls: tuple[str, ...]  # client i connects to urls[i % len(urls)]
    sizes: tuple[int, ...]


@dataclass(frozen=True)
class PhaseSpec:
    kind: PhaseKind
    prefix: str  # starts every client_id of the phase: deliveries of other phases are told apart
    start_at: float  # time.monotonic(), one clock for every process of the machine
    duration: float
    rate: float
    seed: int
    senders_per_group: int


@dataclass
class StepResult:
    """A setup step of one driver."""

    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    first_error: str = ""
    convs: dict[int, str] = field(default_factory=dict)


@dataclass
class SendResult:
    """What one driver sent in a phase: (group, stream, seq, sender) of each accepted message."""

    sent: list[tuple[int, str, int, int]] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    lateness: array[float] = field(default_factory=lambda: array("d"))  # paced: s behind due


@dataclass
class DeliveryResult:
    """What one driver's clients received of a phase, against what they should have."""

    expected: int = 0  # deliveries to members other than the sender
    deliveries: int = 0
    in_window: int = 0  # of those, received between the phase's start and end
    lost: int = 0
    lost_echo: int = 0  # the sender's own copy
    duplicated: int = 0
    out_of_order: int = 0
    extra: int = 0  # received, but not among the accepted messages
    stale: int = 0  # of an earlier phase
    latencies: array[float] = field(default_factory=lambda: array("d"))
    received: array[float] = field(default_factory=lambda: array("d"))
    waited_s: float = 0.0
    closed: dict[str, int] = field(default_factory=dict)  # dropped connections by close code


class Tally:
    """Deliveries of the running phase, checked per (receiver, stream) as they arrive."""

    def __init__(self, phase: PhaseSpec) -> None:
        self.prefix = phase.prefix
        self.start = phase.start_at
        self.end = phase.start_at + phase.duration
        self.seen: dict[tuple[int, str], set[int]] = {}
        self.last: dict[tuple[int, str], int] = {}
        self.unique = 0
        self.duplicated = 0
        self.out_of_order = 0
        self.in_window = 0
        self.latencies: array[float] = array("d")
        self.received: array[float] = array("d")  # when each of those arrived
        self.sends = SendResult()


class Member:
    """One client: its identity, group and connection (a Huddle device or a bare socket)."""

    def __init__(self, number: int, prefix: str, group: int, rank: int) -> None:
        self.number = number
        self.identity = f"{prefix}-{number}"
        self.group = group
        self.rank = rank
        self.stream = ""  # Huddle: the group's conversation
        self.huddle: HuddleClient | None = None
        self.bare: BareClient | None = None
        self.echo: asyncio.Future[None] | None = None
        self.echo_id = ""

    @property
    def closed(self) -> bool:
        if self.huddle is not None:
            return self.huddle.closed.is_set()
        return self.bare is None or self.bare.closed

    @property
    def close_code(self) -> int | None:
        if self.huddle is not None:
            return self.huddle.close_code
        return None if self.bare is None else self.bare.close_code

    async def close(self) -> None:
        if self.huddle is not None:
            await self.huddle.close()
        if self.bare is not None:
            await self.bare.close()


class Driver:
    """One process's share of the clients (numbers ``index``, ``index + drivers``, ...)."""

    def __init__(self, spec: DriverSpec, http: aiohttp.ClientSession) -> None:
        self.spec = spec
        self.http = http
        self.target: TargetSpec | None = None
        self.members: dict[int, Member] = {}
        self.tally: Tally | None = None
        self.stale = 0

    # --- setup ----------------------------------------------------------------------

    async def connect(self, target: TargetSpec) -> StepResult:
        self.target = target
        prefix = target.name
        placed = group_of(target.sizes)
        numbers = range(self.spec.index, len(placed), self.spec.drivers)
        self.members = {i: Member(i, prefix, *placed[i]) for i in numbers}
        gate = asyncio.Semaphore(max(1, CONNECT_CONCURRENCY // self.spec.drivers))
        result = StepResult()

        async def one(member: Member) -> None:
            url = target.urls[member.number % len(target.urls)]
            async with gate:
                try:
                    async with asyncio.timeout(CONNECT_TIMEOUT_S):
                        await self._open(member, url)
                except Exception as exc:
                    _fail(result, exc)
                else:
                    result.ok += 1

        started = time.monotonic()
        await asyncio.gather(*(one(m) for m in self.members.values()))
        result.seconds = time.monotonic() - started
        return result

    async def _open(self, member: Member, url: str) -> None:
        if self.target is not None and self.target.kind == "bare":
            member.stream = member.identity
            member.bare = BareClient(
                url, str(member.group), self.http, lambda f: self._on_bare(member, f)
            )
            await member.bare.connect()
            return
        token = mint_token(
            api_key=self.spec.api_key,
            api_secret=self.spec.api_secret,
            identity=member.identity,
            ttl_s=TOKEN_TTL_S,
        )
        client = HuddleClient(url, token, device="load", session=self.http)
        member.huddle = client
        client.on("chat.message", lambda e: self._on_huddle(member, e))
        await client.connect()
        await client.hello()

    async def create(self) -> StepResult:
        """The first member of each group creates it with the others in."""
        result = StepResult()
        started = time.monotonic()
        for member in self.members.values():
            if member.rank != 0 or member.huddle is None or self.target is None:
                continue
            first = sum(self.target.sizes[: member.group])
            others = range(first + 1, first + self.target.sizes[member.group])
            request = w.ChatCreate(
                id="",
                kind="group",
                name=f"load {member.group}",
                members=[f"{self.target.name}-{i}" for i in others],
            )
            try:
                reply = await member.huddle.request(request, timeout=REQUEST_TIMEOUT_S)
            except Exception as exc:
                _fail(result, exc)
            else:
                result.convs[member.group] = reply.conv.conv
                result.ok += 1
        result.seconds = time.monotonic() - started
        return result

    async def sync(self, convs: dict[int, str]) -> StepResult:
        """chat.sync: from here on the devices receive their conversations' events live."""
        result = StepResult()
        gate = asyncio.Semaphore(max(1, CONNECT_CONCURRENCY // self.spec.drivers))

        async def one(member: Member) -> None:
            if member.huddle is None:
                return
            member.stream = convs[member.group]
            async with gate:
                try:
                    reply = await member.huddle.request(w.ChatSync(id=""), REQUEST_TIMEOUT_S)
                    if member.stream not in reply.heads:
                        raise RuntimeError(f"{member.identity} not in {member.stream}")
                except Exception as exc:
                    _fail(result, exc)
                else:
                    result.ok += 1

        started = time.monotonic()
        await asyncio.gather(*(one(m) for m in self.members.values()))
        result.seconds = time.monotonic() - started
        return result

    async def close_all(self) -> StepResult:
        result = StepResult()
        gate = asyncio.Semaphore(max(1, CONNECT_CONCURRENCY // self.spec.drivers))
        members, self.members = list(self.members.values()), {}

        async def one(member: Member) -> None:
            async with gate:
                try:
                    await member.close()
                except Exception as exc:
                    _fail(result, exc)
                else:
                    result.ok += 1

        started = time.monotonic()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await asyncio.gather(*(one(m) for m in members))
        except TimeoutError as exc:
            _fail(result, exc)
        result.seconds = time.monotonic() - started
        return result

    # --- receiving ------------------------------------------------------------------

    def _on_huddle(self, member: Member, event: Event) -> None:
        if isinstance(event, w.ChatMessageEvent) and event.message.client_id is not None:
            self._delivered(member, event.conv, event.message.seq, event.message.client_id)

    def _on_bare(self, member: Member, frame: BareFrame) -> None:
        self._delivered(member, frame.sender, frame.n, frame.client_id)

    def _delivered(self, member: Member, stream: str, seq: int, client_id: str) -> None:
        """One message received; ``client_id`` is "<phase prefix><sender>.<n>.<sent at>"."""
        now = time.monotonic()
        tally = self.tally
        if tally is None or not client_id.startswith(tally.prefix):
            self.stale += 1
            return
        key = (member.number, stream)
        seen = tally.seen.get(key)
        if seen is None:
            seen = tally.seen[key] = set()
        if seq in seen:
            tally.duplicated += 1
            return
        seen.add(seq)
        tally.unique += 1
        if seq < tally.last.get(key, 0):
            tally.out_of_order += 1
        else:
            tally.last[key] = seq
        sender, _, sent_at = client_id[len(tally.prefix) :].split(".", 2)
        if int(sender) == member.number:
            echo = member.echo
            if echo is not None and member.echo_id == client_id and not echo.done():
                echo.set_result(None)
            return
        tally.latencies.append(now - float(sent_at))
        tally.received.append(now)
        if tally.start <= now < tally.end:
            tally.in_window += 1

    async def drain_queues(self) -> None:
        """HuddleClient also queues every event for ``next_event``: nobody reads it here."""
        while True:
            await asyncio.sleep(QUEUE_DRAIN_S)
            for member in self.members.values():
                if member.huddle is not None:
                    queue = member.huddle.events
                    while not queue.empty():
                        queue.get_nowait()

    # --- sending --------------------------------------------------------------------

    async def _send(self, tally: Tally, member: Member, n: int, wait_echo: bool) -> bool:
        client_id = f"{tally.prefix}{member.number}.{n}.{time.monotonic():.6f}"
        if wait_echo:
            member.echo = asyncio.get_running_loop().create_future()
            member.echo_id = client_id
        try:
            if member.huddle is not None:
                request = w.ChatSend(id="", conv=member.stream, client_id=client_id, text=TEXT)
                reply = await member.huddle.request(request, timeout=REQUEST_TIMEOUT_S)
                seq = reply.seq
            elif member.bare is not None:
                frame = BareFrame(
                    conv=str(member.group),
                    sender=member.identity,
                    client_id=client_id,
                    n=n,
                    text=TEXT,
                )
                await member.bare.send(frame)
                seq = n
            else:
                raise ConnectionError("not connected")
            tally.sends.sent.append((member.group, member.stream, seq, member.number))
            if member.echo is not None:
                await asyncio.wait_for(member.echo, REQUEST_TIMEOUT_S)
        except Exception as exc:
            tally.sends.errors += 1
            if not tally.sends.first_error:
                tally.sends.first_error = f"{type(exc).__name__}: {exc}"
            return False
        finally:
            member.echo = None
        return True

    async def run_phase(self, phase: PhaseSpec) -> SendResult:
        tally = self.tally = Tally(phase)
        if phase.kind == "saturated":
            await self._saturate(tally, phase)
        else:
            await self._paced(tally, phase)
        return tally.sends

    async def _paced(self, tally: Tally, phase: PhaseSpec) -> None:
        """Open loop: each message at its time, whatever the replies do."""
        assert self.target is not None
        schedule = paced_schedule(self.target.sizes, phase.rate, phase.duration, phase.seed)
        counts: Counter[int] = Counter()
        tasks: set[asyncio.Task[bool]] = set()
        for offset, number in schedule:
            member = self.members.get(number)
            if member is None:
                continue
            due = phase.start_at + offset
            await _sleep_until(due)
            tally.sends.lateness.append(time.monotonic() - due)
            task = asyncio.create_task(self._send(tally, member, counts[number], False))
            counts[number] += 1
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await _sleep_until(phase.start_at + phase.duration)
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 1)

    async def _saturate(self, tally: Tally, phase: PhaseSpec) -> None:
        """Closed loop: the first members of each group send back to back, each waiting for
        its message to come back to itself (through the whole path) before the next."""
        deadline = phase.start_at + phase.duration

        async def one(member: Member) -> None:
            await _sleep_until(phase.start_at)
            n = 0
            while time.monotonic() < deadline and await self._send(tally, member, n, True):
                n += 1

        senders = [m for m in self.members.values() if m.rank < phase.senders_per_group]
        await asyncio.gather(*(one(m) for m in senders))

    async def collect(
        self, expected: dict[int, list[tuple[str, int, int]]], timeout: float
    ) -> DeliveryResult:
        """Wait for what every accepted message owes this driver's clients, then check it."""
        tally = self.tally
        assert tally is not None
        result = DeliveryResult()
        want = sum(len(expected.get(m.group, ())) for m in self.members.values())
        started = time.monotonic()
        while tally.unique < want and time.monotonic() - started < timeout:
            if all(m.closed for m in self.members.values()):
                break
            await asyncio.sleep(0.02)
        result.waited_s = time.monotonic() - started
        await asyncio.sleep(SETTLE_S)
        self.tally = None
        matched = 0
        for member in self.members.values():
            for stream, seq, sender in expected.get(member.group, ()):
                own = sender == member.number
                result.expected += not own
                if seq in tally.seen.get((member.number, stream), ()):
                    matched += 1
                elif own:
                    result.lost_echo += 1
                else:
                    result.lost += 1
        result.deliveries = len(tally.latencies)
        result.in_window = tally.in_window
        result.duplicated = tally.duplicated
        result.out_of_order = tally.out_of_order
        result.extra = tally.unique - matched
        result.latencies = tally.latencies
        result.received = tally.received
        result.stale, self.stale = self.stale, 0
        closed = Counter(str(m.close_code) for m in self.members.values() if m.closed)
        result.closed = dict(closed)
        return result

    async def run(self, command: tuple[Any, ...]) -> Any:
        name = command[0]
        if name == "connect":
            return await self.connect(command[1])
        if name == "create":
            return await self.create()
        if name == "sync":
            return await self.sync(command[1])
        if name == "phase":
            # The driver's own collector pauses would read as latency; a phase is bounded,
            # so its garbage waits until the phase's deliveries are checked.
            gc.collect()
            gc.disable()
            return await self.run_phase(command[1])
        if name == "collect":
            try:
                return await self.collect(command[1], command[2])
            finally:
                gc.enable()
        if name == "close":
            return await self.close_all()
        raise ValueError(f"unknown driver command {name!r}")


def _fail(result: StepResult, exc: BaseException) -> None:
    result.errors += 1
    if not result.first_error:
        result.first_error = f"{type(exc).__name__}: {exc}"


async def _sleep_until(instant: float) -> None:
    delay = instant - time.monotonic()
    if delay > 0:
        await asyncio.sleep(delay)


async def _drive(conn: Connection, spec: DriverSpec) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        driver = Driver(spec, http)
        drain = asyncio.create_task(driver.drain_queues())
        try:
            conn.send(("ready", None))
            while True:
                command = await asyncio.to_thread(conn.recv)
                if command[0] == "stop":
                    return
                try:
                    conn.send(("ok", await driver.run(command)))
                except Exception:
                    conn.send(("error", traceback.format_exc()))
        finally:
            drain.cancel()
            await driver.close_all()


def _driver_main(conn: Connection, spec: DriverSpec) -> None:
    # Ctrl-C reaches the whole process group: the parent alone cleans up, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _run_loop(_drive(conn, spec))


def _run_loop(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:  # the loop `huddle serve` runs on
        uvloop.run(main)


class DriverPool:
    """The driver processes, with a pipe each for commands; they serve every target."""

    def __init__(self, specs: Sequence[DriverSpec]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipes: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for spec in specs:
            ours, theirs = ctx.Pipe()
            proc = ctx.Process(target=_driver_main, args=(theirs, spec), daemon=True)
            proc.start()
            theirs.close()
            self._pipes.append(ours)
            self.procs.append(proc)
        self.collect(SERVER_START_TIMEOUT_S, "start")

    def send(self, command: tuple[Any, ...]) -> None:
        for pipe in self._pipes:
            pipe.send(command)

    def run(self, command: tuple[Any, ...], timeout: float) -> list[Any]:
        self.send(command)
        return self.collect(timeout, str(command[0]))

    def collect(self, timeout: float, what: str) -> list[Any]:
        deadline = time.monotonic() + timeout
        results: list[Any] = []
        for i, pipe in enumerate(self._pipes):
            if not pipe.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError(f"driver {i} did not finish {what!r} within {timeout:.0f} s")
            status, payload = pipe.recv()
            if status == "error":
                raise RuntimeError(f"driver {i} failed in {what!r}:\n{payload}")
            results.append(payload)
        return results

    @property
    def pids(self) -> list[int]:
        return [proc.pid or 0 for proc in self.procs]

    def close(self, wait_s: float) -> None:
        for pipe in self._pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(("stop",))
        deadline = time.monotonic() + wait_s
        for proc in self.procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for pipe in self._pipes:
            pipe.close()


# --- servers ----------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_servers(
    folder: Path, redis_url: str, api_key: str, api_secret: str, nodes: int, bare: bool
) -> list[Server]:
    """Start the nodes and the bare relay (all at once: see ``wait_servers``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUDDLE_")}
    env.update(
        REDIS_URL=redis_url,
        HUDDLE_API_KEY=api_key,
        HUDDLE_API_SECRET=api_secret,
        # Measure the node, not its limiters: one device sends far above a person's rate.
        HUDDLE_RATE_PER_S="100000",
        HUDDLE_RATE_BURST="100000",
        HUDDLE_CHAT_SEND_PER_S="1000000",
        # Chat only: no SFU worker processes competing for the two cores.
        HUDDLE_SFU_WORKERS="0",
        HUDDLE_LOG_LEVEL="warning",
    )
    servers: list[Server] = []
    try:
        for i in range(nodes):
            port = free_port()
            cmd = [sys.executable, "-m", "huddle", "serve", "--port", str(port),
                   "--data-dir", str(folder / f"node{i + 1}")]  # fmt: skip
            log = folder / f"node{i + 1}.log"
            proc = start_logged(cmd, env, log)
            servers.append(Server(f"node{i + 1}", f"http://127.0.0.1:{port}", proc, log))
        if bare:
            port = free_port()
            cmd = [sys.executable, "-m", "benchmarks.chat_bare", "--port", str(port),
                   "--redis-url", redis_url]  # fmt: skip
            log = folder / "bare.log"
            proc = start_logged(cmd, dict(os.environ), log)
            servers.append(Server("bare", f"http://127.0.0.1:{port}", proc, log))
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def wait_servers(servers: Sequence[Server]) -> None:
    for server in servers:
        wait_healthy(server.url, server.proc, server.log_path)


def stop_servers(servers: Sequence[Server]) -> None:
    """SIGTERM to all first: they shut down side by side."""
    for server in servers:
        if server.proc.poll() is None:
            server.proc.terminate()
    for server in servers:
        stop_process(server.proc)


def _tree_cpu_seconds(pid: int) -> float:
    total = cpu_seconds(pid)
    with contextlib.suppress(psutil.Error):
        total += sum(cpu_seconds(c.pid) for c in psutil.Process(pid).children(recursive=True))
    return total


def _log_problems(path: Path) -> dict[str, int]:
    """Warnings and errors a server logged, counted by message."""
    seen: Counter[str] = Counter()
    if not path.exists():
        return {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            if line.strip():
                seen[line.strip()[:120]] += 1
            continue
        if isinstance(record, dict) and record.get("level") in ("warning", "error", "critical"):
            detail = f" ({record['error']})" if "error" in record else ""
            seen[f"{record['level']}: {record.get('msg')}{detail}"[:200]] += 1
    return dict(seen)


def _node_counters(url: str) -> dict[str, float]:
    """Error replies and closes by code from a node's /metrics."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return {}
    counters: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(("huddle_ws_errors_total", "huddle_ws_closes_total")):
            name, _, value = line.rpartition(" ")
            if float(value):
                counters[name] = float(value)
    return counters


# --- measuring --------------------------------------------------------------------------


@dataclass
class CpuUse:
    """CPU over a phase's sending window, as a share of one core (1.0 = one core busy)."""

    wall_s: float
    servers_core: list[float]  # each server process with its children
    redis_core: float
    drivers_core: list[float]
    machine_busy: float  # system-wide, as a share of all cores
    # Of that: interrupts (mostly the loopback traffic's softirq) and time the hypervisor took.
    kernel_busy: float
    others_busy: float  # and what neither our processes nor the kernel explain
    servers_s: float  # CPU seconds of the servers together
    drivers_s: float


def _kernel_seconds() -> float:
    times = psutil.cpu_times()
    return sum(float(getattr(times, f, 0.0)) for f in ("irq", "softirq", "steal"))


class CpuClock:
    """CPU of the target's servers, Redis and the drivers; ``idle`` are our other processes
    (the servers of the other targets, this script), counted only to tell others apart."""

    def __init__(
        self,
        servers: Sequence[int],
        redis_pid: int,
        drivers: Sequence[int],
        idle: Sequence[int],
    ) -> None:
        self._servers, self._redis, self._drivers = list(servers), redis_pid, list(drivers)
        self._idle = list(idle)
        self._start = self._sample()

    def _sample(self) -> tuple[float, list[float], float, list[float], float, float, float, float]:
        return (
            time.monotonic(),
            [_tree_cpu_seconds(pid) for pid in self._servers],
            cpu_seconds(self._redis),
            [cpu_seconds(pid) for pid in self._drivers],
            sum(_tree_cpu_seconds(pid) for pid in self._idle),
            _kernel_seconds(),
            *machine_busy_seconds(),
        )

    def stop(self) -> CpuUse:
        t0, s0, r0, d0, i0, k0, b0, all0 = self._start
        t1, s1, r1, d1, i1, k1, b1, all1 = self._sample()
        wall = max(t1 - t0, 1e-9)
        servers = [b - a for a, b in zip(s0, s1, strict=True)]
        drivers = [b - a for a, b in zip(d0, d1, strict=True)]
        ours = sum(servers) + (r1 - r0) + sum(drivers) + (i1 - i0)
        every = max(all1 - all0, 1e-9)
        machine, kernel = (b1 - b0) / every, (k1 - k0) / every
        return CpuUse(
            wall_s=wall,
            servers_core=[s / wall for s in servers],
            redis_core=(r1 - r0) / wall,
            drivers_core=[d / wall for d in drivers],
            machine_busy=machine,
            kernel_busy=kernel,
            others_busy=max(0.0, machine - kernel - ours / (wall * (os.cpu_count() or 1))),
            servers_s=sum(servers),
            drivers_s=sum(drivers),
        )


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

    def phase(self, kind: PhaseKind) -> PhaseFigures | None:
        return self.phases.get(kind)

    def total(self, name: str) -> int:
        return sum(int(getattr(p, name)) for p in self.phases.values())


@dataclass
class Options:
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


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def _slots(start: float, deliveries: list[tuple[float, float]]) -> list[tuple[float, float, int]]:
    """(seconds after ``start``, latest delivery in ms, deliveries) per 100 ms of arrivals."""
    worst: dict[int, float] = {}
    count: Counter[int] = Counter()
    for received, latency in deliveries:
        slot = int((received - start) / SLOT_S)
        worst[slot] = max(worst.get(slot, 0.0), latency)
        count[slot] += 1
    return [(round(i * SLOT_S, 1), worst[i] * 1000, count[i]) for i in sorted(worst)]


def run_phase(
    pool: DriverPool,
    servers: Sequence[Server],
    redis_pid: int,
    idle: Sequence[int],
    phase: PhaseSpec,
) -> PhaseFigures:
    """Send (all drivers from the same instant), then collect and check every delivery."""
    pool.send(("phase", phase))
    time.sleep(max(0.0, phase.start_at - time.monotonic()))
    clock = CpuClock([s.pid for s in servers], redis_pid, pool.pids, idle)
    timeout = START_DELAY_S + phase.duration + 2 * REQUEST_TIMEOUT_S + 10
    sends: list[SendResult] = pool.collect(timeout, phase.kind)
    cpu = clock.stop()
    expected: dict[int, list[tuple[str, int, int]]] = {}
    for result in sends:
        for group, stream, seq, sender in result.sent:
            expected.setdefault(group, []).append((stream, seq, sender))
    got: list[DeliveryResult] = pool.run(
        ("collect", expected, COLLECT_TIMEOUT_S), COLLECT_TIMEOUT_S + SETTLE_S + 10
    )
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
        p50_ms=_ms(percentile(latencies, 50)),
        p99_ms=_ms(percentile(latencies, 99)),
        max_ms=_ms(max(latencies) if latencies else None),
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
        send_lateness_p99_ms=_ms(percentile(lateness, 99)),
        waited_s=max(r.waited_s for r in got),
        closed=dict(closed),
        first_errors=sorted({r.first_error for r in sends if r.first_error}),
        cpu=cpu,
    )


def run_target(
    pool: DriverPool,
    target: TargetSpec,
    servers: Sequence[Server],
    redis_pid: int,
    idle: Sequence[int],
    opts: Options,
    number: int,
    say: Callable[[str], None],
) -> TargetResult:
    """Connect (Huddle: hello, create the groups, chat.sync), then warm-up, paced, saturated."""
    steps: list[StepResult] = []
    say(f"{target.name}: connecting {opts.clients} clients")
    started = time.monotonic()
    connected = pool.run(("connect", target), CONNECT_TIMEOUT_S + opts.clients / 20)
    steps += connected
    if target.kind == "huddle":
        created = pool.run(("create",), REQUEST_TIMEOUT_S * len(target.sizes) + 10)
        steps += created
        convs = {g: c for r in created for g, c in r.convs.items()}
        if len(convs) < len(target.sizes):
            raise RuntimeError(f"{target.name}: groups not created: {created[0].first_error}")
        steps += pool.run(("sync", convs), REQUEST_TIMEOUT_S + opts.clients / 20)
    setup_s = time.monotonic() - started
    phases: dict[str, PhaseFigures] = {}
    plan: list[tuple[PhaseKind, float]] = [
        ("warm-up", min(WARMUP_S, opts.duration / 4)),
        ("paced", opts.duration),
        ("saturated", opts.duration),
    ]
    for i, (kind, duration) in enumerate(plan):
        say(f"{target.name}: {kind} for {duration:g} s")
        phase = PhaseSpec(
            kind=kind,
            prefix=f"t{number}p{i}.",
            start_at=time.monotonic() + START_DELAY_S,
            duration=duration,
            rate=opts.rate,
            seed=opts.seed + i,
            senders_per_group=opts.senders_per_group,
        )
        phases[kind] = run_phase(pool, servers, redis_pid, idle, phase)
    counters = {s.name: _node_counters(s.url) for s in servers if target.kind == "huddle"}
    closed = pool.run(("close",), CLOSE_TIMEOUT_S + 10)
    steps += closed
    return TargetResult(
        name=target.name,
        kind=target.kind,
        nodes=len(servers),
        clients=opts.clients,
        connected=sum(r.ok for r in connected),
        setup_errors=sum(r.errors for r in steps),
        setup_s=setup_s,
        phases=phases,
        first_errors=sorted({r.first_error for r in steps if r.first_error}),
        server_log={s.name: _log_problems(s.log_path) for s in servers},
        server_counters=counters,
    )


# --- report -----------------------------------------------------------------------------


def _ratio(ours: float | None, theirs: float | None) -> float | None:
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _pct(share: float) -> str:
    return f"{share:.0%}"


def _table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> Iterator[str]:
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for i, r in enumerate((header, *rows)):
        rest = [c.rjust(wd) for c, wd in zip(r[1:], widths[1:], strict=True)]
        yield " | ".join([r[0].ljust(widths[0]), *rest]).rstrip()
        if i == 0:
            yield "-+-".join("-" * wd for wd in widths)


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
            *(_fmt(v, digits) for v in values),
            _fmt(_ratio(values[0], values[2]), 2),
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


def _cpu_rows(results: Sequence[TargetResult]) -> list[tuple[str, ...]]:
    return [
        (
            f"{r.name} {kind}",
            f"{p.cpu.wall_s:.1f}",
            "+".join(_pct(c) for c in p.cpu.servers_core),
            _pct(p.cpu.redis_core),
            "+".join(_pct(c) for c in p.cpu.drivers_core),
            _pct(p.cpu.machine_busy),
            _pct(p.cpu.kernel_busy),
            _pct(p.cpu.others_busy),
        )
        for r in results
        for kind, p in r.phases.items()
        if kind != "warm-up"
    ]


def bottleneck(use: CpuUse) -> str:
    """Which process limited a saturated phase, from the CPU shares."""
    servers = "+".join(_pct(c) for c in use.servers_core)
    drivers = "+".join(_pct(c) for c in use.drivers_core)
    facts = (
        f"server {servers}, redis {_pct(use.redis_core)}, drivers {drivers}, "
        f"machine {_pct(use.machine_busy)}"
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
    one: TargetResult, two: TargetResult | None, bare: TargetResult | None
) -> dict[str, float | int | None]:
    huddle = [t for t in (one, two) if t is not None]
    return {
        "p99_ms": _get(one, "paced", "p99_ms"),
        "deliveries_per_s": _get(one, "saturated", "deliveries_per_s"),
        "deliveries_vs_bare": _ratio(
            _get(one, "saturated", "deliveries_per_s"), _get(bare, "saturated", "deliveries_per_s")
        ),
        "deliveries_per_cpu_vs_bare": _ratio(
            _get(one, "saturated", "deliveries_per_server_cpu_s"),
            _get(bare, "saturated", "deliveries_per_server_cpu_s"),
        ),
        "lost": sum(t.total("lost") + t.total("lost_echo") for t in huddle),
        "duplicated": sum(t.total("duplicated") for t in huddle),
        "out_of_order": sum(t.total("out_of_order") for t in huddle),
        "deliveries_per_s_two_nodes": _get(two, "saturated", "deliveries_per_s"),
        "bare_deliveries_per_s": _get(bare, "saturated", "deliveries_per_s"),
    }


def targets(figures: dict[str, float | int | None], rate: float) -> dict[str, dict[str, Any]]:
    def goal(value: float | int | None, text: str, ok: Callable[[float], bool]) -> dict[str, Any]:
        return {"target": text, "value": value, "met": None if value is None else ok(value)}

    p99_text = f"< {TARGET_P99_MS:g} at {rate:,.0f} deliveries/s"
    if rate != TARGET_RATE:
        p99_text += f" (the target is at {TARGET_RATE:,.0f})"
    return {
        "p99_ms": goal(figures["p99_ms"], p99_text, lambda v: v < TARGET_P99_MS),
        "deliveries_vs_bare": goal(
            figures["deliveries_vs_bare"], f">= {TARGET_VS_BARE}", lambda v: v >= TARGET_VS_BARE
        ),
        "lost": goal(figures["lost"], "0", lambda v: v == 0),
        "duplicated": goal(figures["duplicated"], "0", lambda v: v == 0),
        "out_of_order": goal(figures["out_of_order"], "0", lambda v: v == 0),
    }


def report(
    opts: Options,
    sizes: Sequence[int],
    one: TargetResult,
    two: TargetResult | None,
    bare: TargetResult | None,
) -> str:
    results = [t for t in (one, two, bare) if t is not None]
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
        *_table(
            _rows(one, two, bare),
            ("metric", "huddle 1 node", "huddle 2 nodes", "bare", "1 node / bare"),
        ),
        "",
        "CPU over each phase's sending window, share of one core (machine and the columns "
        "after it: of all cores)",
        *_table(
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
    goals = targets(summary(one, two, bare), opts.rate)
    verdict = {True: "yes", False: "NO", None: "-"}
    rows = [
        (name, _fmt(goal["value"], 2), goal["target"], verdict[goal["met"]])
        for name, goal in goals.items()
    ]
    lines.extend(["", *_table(rows, ("target", "measured", "goal", "met"))])
    return "\n".join(lines)


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
        default=DEFAULT_DURATION_S,
        help="seconds of the paced and of the saturated phase, each",
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
        "--quick", action="store_true", help="smoke run: 60 clients, 2 s phases, 1,000/s"
    )
    ap.add_argument("--skip-two-nodes", action="store_true", help="no two-node run")
    ap.add_argument("--skip-bare", action="store_true", help="no baseline run")
    ap.add_argument("--json", type=Path, help="write every figure to this file")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        args.clients, args.duration, args.rate = 60, 2.0, 1000.0
    opts = Options(
        clients=args.clients,
        rate=args.rate,
        duration=args.duration,
        drivers=args.drivers,
        senders_per_group=args.senders_per_group,
        seed=args.seed,
        api_key="bench",
        api_secret=secrets.token_urlsafe(32),
        skip_two_nodes=args.skip_two_nodes,
        skip_bare=args.skip_bare,
    )
    fd_limit = raise_fd_limit(opts.clients)
    sizes = tuple(group_sizes(opts.clients))

    began = time.monotonic()

    def say(text: str) -> None:
        print(f"# {time.monotonic() - began:5.1f} s: {text}", file=sys.stderr, flush=True)

    results: dict[str, TargetResult] = {}
    with tempfile.TemporaryDirectory(prefix="huddle-chat-bench-") as tmp:
        folder = Path(tmp)
        say("starting redis-server, the nodes and the bare relay")
        redis_proc, redis_url = spawn_sync(folder / "redis")
        servers: list[Server] = []
        pool: DriverPool | None = None
        try:
            nodes = 1 if opts.skip_two_nodes else 2
            servers = start_servers(
                folder, redis_url, opts.api_key, opts.api_secret, nodes, not opts.skip_bare
            )
            specs = [
                DriverSpec(index=i, drivers=opts.drivers, api_key=opts.api_key,
                           api_secret=opts.api_secret)
                for i in range(opts.drivers)
            ]  # fmt: skip
            pool = DriverPool(specs)  # while the servers start
            wait_servers(servers)
            node_servers = [s for s in servers if s.name != "bare"]
            plan: list[tuple[TargetSpec, list[Server]]] = [
                (TargetSpec("huddle", "n1", (node_servers[0].url,), sizes), node_servers[:1])
            ]
            if not opts.skip_two_nodes:
                urls = tuple(s.url for s in node_servers)
                plan.append((TargetSpec("huddle", "n2", urls, sizes), node_servers))
            if not opts.skip_bare:
                bare_server = [s for s in servers if s.name == "bare"]
                plan.append((TargetSpec("bare", "bare", (bare_server[0].url,), sizes), bare_server))
            for number, (target, used) in enumerate(plan):
                idle = [s.pid for s in servers if s not in used] + [os.getpid()]
                results[target.name] = run_target(
                    pool, target, used, redis_proc.pid, idle, opts, number, say
                )
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

    one, two, bare = results["n1"], results.get("n2"), results.get("bare")
    print(report(opts, sizes, one, two, bare))
    if args.json:
        figures = summary(one, two, bare)
        doc = {
            "benchmark": "chat_load",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "fd_limit": fd_limit,
            },
            "config": {**dataclasses.asdict(opts), "api_secret": None},
            "groups": list(sizes),
            "summary": figures,
            "targets": targets(figures, opts.rate),
            "results": {name: dataclasses.asdict(r) for name, r in results.items()},
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        say(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    # Run the importable copy, so that the classes pickled to and from the spawned drivers
    # resolve as benchmarks.chat_load.*, not as __main__.*.
    from benchmarks.chat_load import main as _main

    try:
        sys.exit(_main())
    except KeyboardInterrupt:  # subprocesses were stopped on the way out
        sys.exit(130)

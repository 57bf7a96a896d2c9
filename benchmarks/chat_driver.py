"""The chat load benchmark's driver processes: the clients, what they send and receive.

Each driver process holds every ``drivers``-th client of a target (a Huddle device, a bare
relay socket or an XMPP user of ejabberd) and runs the commands ``benchmarks.chat_load``
sends it over a pipe: connect, create the groups, sync, run a phase, collect, close. While a
phase runs it checks every delivery as it arrives (a :class:`Tally`: repeats and order per
receiver and stream, latency from the send time carried in the message's ``client_id``);
``collect`` then counts what the accepted messages owed its clients and did not get.
:class:`DriverPool` is the parent's side.
"""

from __future__ import annotations

import asyncio
import gc
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Final, Literal

import aiohttp

from benchmarks.chat_bare import BareClient, BareFrame
from benchmarks.chat_groups import group_of, paced_schedule
from benchmarks.chat_xmpp import XmppClient, XmppMessage
from benchmarks.procs import (
    SERVER_START_TIMEOUT_S,
    ProcessPool,
    ignore_interrupts,
    run_loop,
    serve_commands,
    sleep_until,
)
from chat import wire as w
from huddle.client import HuddleClient
from signaling.auth import mint_token
from signaling.protocol import Event

# xmpp: ejabberd, rooms of 2 only (a message to the other user; groups would be MUC rooms).
Kind = Literal["huddle", "bare", "xmpp"]
PhaseKind = Literal["warm-up", "paced", "saturated"]

# A real message's words: the text is indexed for search like any other.
TEXT: Final = "see you all at the weekly planning call, agenda is in the doc"
TOKEN_TTL_S: Final = 3600
CONNECT_CONCURRENCY: Final = 64  # all drivers together
CONNECT_TIMEOUT_S: Final = 20.0
REQUEST_TIMEOUT_S: Final = 10.0
# Repeats arriving after the last expected delivery would be missed without this pause.
SETTLE_S: Final = 0.3
CLOSE_TIMEOUT_S: Final = 30.0
QUEUE_DRAIN_S: Final = 0.5


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
    users: str = ""  # starts every client's identity (default: the name)
    # --shard I/N (0-based here): this machine drives the groups g with g % N == I, the
    # other machines the others, on the same schedule.
    shard: int = 0
    shards: int = 1

    def has_group(self, group: int) -> bool:
        return group % self.shards == self.shard

    @property
    def groups(self) -> int:
        """Groups this machine drives."""
        return sum(self.has_group(g) for g in range(len(self.sizes)))

    @property
    def prefix(self) -> str:
        return self.users or self.name


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
    # When each of those was sent (this machine's monotonic clock), for loss per second.
    sent_at: array[float] = field(default_factory=lambda: array("d"))
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
    # By the second (after the phase's start) the messages were sent in: [deliveries owed
    # to members other than the sender, of those delivered, lost, senders' own copies lost].
    by_second: dict[int, list[int]] = field(default_factory=dict)


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
    """One client: its identity, group and connection (a Huddle device, a bare socket or an
    XMPP user)."""

    def __init__(self, number: int, prefix: str, group: int, rank: int) -> None:
        self.number = number
        self.identity = f"{prefix}-{number}"
        self.group = group
        self.rank = rank
        self.stream = ""  # Huddle: the group's conversation
        self.huddle: HuddleClient | None = None
        self.bare: BareClient | None = None
        self.xmpp: XmppClient | None = None
        self.peer = ""  # xmpp: the other user of its room of 2
        self.echo: asyncio.Future[None] | None = None
        self.echo_id = ""

    @property
    def closed(self) -> bool:
        if self.huddle is not None:
            return self.huddle.closed.is_set()
        if self.xmpp is not None:
            return self.xmpp.closed
        return self.bare is None or self.bare.closed

    @property
    def close_code(self) -> int | None:
        if self.huddle is not None:
            return self.huddle.close_code
        if self.xmpp is not None:
            return self.xmpp.close_code
        return None if self.bare is None else self.bare.close_code

    async def close(self) -> None:
        if self.huddle is not None:
            await self.huddle.close()
        if self.bare is not None:
            await self.bare.close()
        if self.xmpp is not None:
            await self.xmpp.close()


def _owed(
    member: Member, expected: dict[int, list[tuple[str, int, int, int]]]
) -> list[tuple[str, int, int, int]]:
    """What the accepted messages of ``member``'s group owe it: every one, its own included
    (the sender's copy), but on XMPP, which sends the sender no copy."""
    sent = expected.get(member.group, [])
    if member.xmpp is None:
        return sent
    return [e for e in sent if e[2] != member.number]


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
        placed = group_of(target.sizes)
        numbers = range(self.spec.index, len(placed), self.spec.drivers)
        mine = [i for i in numbers if target.has_group(placed[i][0])]
        self.members = {i: Member(i, target.prefix, *placed[i]) for i in mine}

        async def one(member: Member) -> None:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await self._open(member, target.urls[member.number % len(target.urls)])

        return await self._each(self.members.values(), one)

    async def _open(self, member: Member, url: str) -> None:
        if self.target is not None and self.target.kind == "bare":
            member.stream = member.identity
            member.bare = BareClient(
                url, str(member.group), self.http, lambda f: self._on_bare(member, f)
            )
            await member.bare.connect()
            return
        if self.target is not None and self.target.kind == "xmpp":
            member.stream = member.identity
            first = sum(self.target.sizes[: member.group])
            if self.target.sizes[member.group] != 2:
                raise ValueError("an XMPP target runs rooms of 2 only")
            member.peer = f"{self.target.prefix}-{first + (member.number == first)}"
            member.xmpp = XmppClient(
                url, member.identity, self.http, lambda m: self._on_xmpp(member, m)
            )
            await member.xmpp.connect()
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
        """The first member of each group creates it with the others in. A room of two is
        a direct conversation, as one-to-one chat is: made by its first message (``to``),
        sent here before any device syncs, so it is no delivery of the measured phases."""
        result = StepResult()
        started = time.monotonic()
        for member in self.members.values():
            if member.rank != 0 or member.huddle is None or self.target is None:
                continue
            first = sum(self.target.sizes[: member.group])
            others = [
                f"{self.target.prefix}-{i}"
                for i in range(first + 1, first + self.target.sizes[member.group])
            ]
            request: w.ChatCreate | w.ChatSend = (
                w.ChatSend(id="", to=others[0], client_id=f"open-{member.group}", text="hi")
                if len(others) == 1
                else w.ChatCreate(id="", kind="group", name=f"load {member.group}", members=others)
            )
            try:
                reply = await member.huddle.request(request, timeout=REQUEST_TIMEOUT_S)
            except Exception as exc:
                _fail(result, exc)
            else:
                conv = reply.conv if isinstance(reply, w.ChatSendOk) else reply.conv.conv
                result.convs[member.group] = conv
                result.ok += 1
        result.seconds = time.monotonic() - started
        return result

    async def sync(self, convs: dict[int, str]) -> StepResult:
        """chat.sync: from here on the devices receive their conversations' events live."""
        members = [m for m in self.members.values() if m.huddle is not None]
        for member in members:
            member.stream = convs[member.group]

        async def one(member: Member) -> None:
            assert member.huddle is not None
            reply = await member.huddle.request(w.ChatSync(id=""), REQUEST_TIMEOUT_S)
            if member.stream not in reply.heads:
                raise RuntimeError(f"{member.identity} not in {member.stream}")

        return await self._each(members, one)

    async def close_all(self) -> StepResult:
        members, self.members = list(self.members.values()), {}
        return await self._each(members, Member.close, CLOSE_TIMEOUT_S)

    async def _each(
        self,
        members: Iterable[Member],
        job: Callable[[Member], Awaitable[None]],
        timeout: float | None = None,
    ) -> StepResult:
        """``job`` for every member, a few at a time; failures are counted, not raised."""
        result = StepResult()
        gate = asyncio.Semaphore(max(1, CONNECT_CONCURRENCY // self.spec.drivers))

        async def one(member: Member) -> None:
            async with gate:
                try:
                    await job(member)
                except Exception as exc:
                    _fail(result, exc)
                else:
                    result.ok += 1

        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
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

    def _on_xmpp(self, member: Member, message: XmppMessage) -> None:
        client_id, n, _ = (*message.body.split(" ", 2), "", "")[:3]
        if n.isdigit():
            self._delivered(member, message.sender, int(n), client_id)
        else:
            self.stale += 1

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
        began = time.monotonic()
        client_id = f"{tally.prefix}{member.number}.{n}.{began:.6f}"
        if wait_echo and member.xmpp is not None:
            raise ValueError("XMPP sends the sender no copy to wait for")
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
            elif member.xmpp is not None:
                # The client id, the number and the words the other targets' messages carry.
                await member.xmpp.send(member.peer, f"{client_id} {n} {TEXT}")
                seq = n
            else:
                raise ConnectionError("not connected")
            tally.sends.sent.append((member.group, member.stream, seq, member.number))
            tally.sends.sent_at.append(began)
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
            await sleep_until(due)
            tally.sends.lateness.append(time.monotonic() - due)
            task = asyncio.create_task(self._send(tally, member, counts[number], False))
            counts[number] += 1
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await sleep_until(phase.start_at + phase.duration)
        if tasks:
            await asyncio.wait(tasks, timeout=REQUEST_TIMEOUT_S + 1)

    async def _saturate(self, tally: Tally, phase: PhaseSpec) -> None:
        """Closed loop: the first members of each group send back to back, each waiting for
        its message to come back to itself (through the whole path) before the next."""
        deadline = phase.start_at + phase.duration

        async def one(member: Member) -> None:
            await sleep_until(phase.start_at)
            n = 0
            while time.monotonic() < deadline and await self._send(tally, member, n, True):
                n += 1

        senders = [m for m in self.members.values() if m.rank < phase.senders_per_group]
        await asyncio.gather(*(one(m) for m in senders))

    async def collect(
        self, expected: dict[int, list[tuple[str, int, int, int]]], timeout: float
    ) -> DeliveryResult:
        """Wait for what every accepted message owes this driver's clients, then check it;
        ``expected`` holds (stream, seq, sender, second it was sent in) by group."""
        tally = self.tally
        assert tally is not None
        result = DeliveryResult()
        want = sum(len(_owed(m, expected)) for m in self.members.values())
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
            for stream, seq, sender, second in _owed(member, expected):
                own = sender == member.number
                result.expected += not own
                row = result.by_second.setdefault(second, [0, 0, 0, 0])
                row[0] += not own
                if seq in tally.seen.get((member.number, stream), ()):
                    matched += 1
                    row[1] += not own
                elif own:
                    result.lost_echo += 1
                    row[3] += 1
                else:
                    result.lost += 1
                    row[2] += 1
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


async def _drive(conn: Connection, spec: DriverSpec) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        driver = Driver(spec, http)
        drain = asyncio.create_task(driver.drain_queues())
        try:
            await serve_commands(conn, driver.run)
        finally:
            drain.cancel()
            await driver.close_all()


def _driver_main(conn: Connection, spec: DriverSpec) -> None:
    ignore_interrupts()
    run_loop(_drive(conn, spec))


class DriverPool(ProcessPool):
    """The driver processes, with a pipe each for commands; they serve every target."""

    def __init__(self, specs: Sequence[DriverSpec]) -> None:
        super().__init__(_driver_main, specs, SERVER_START_TIMEOUT_S)

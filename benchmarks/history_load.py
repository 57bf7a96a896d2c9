"""Chat history on disk under load: Redis memory per message before and after each
conversation's hot window fills, bytes on disk, archive lag, page and search latency, with
the embedded SQLite store and with PostgreSQL.

One node runs in this process (its Redis, history store, archiver and chat service, as
``huddle serve`` composes them, without HTTP): messages are seeded through the chat service's
own ``chat.send`` handler (the write path of every device, minus the WebSocket), spread over
``--conversations`` groups of five, while the node archives them and trims Redis to
``--window`` events per conversation. Then:

- ``window_bytes_per_message``: Redis ``used_memory`` per message while every conversation
  still holds all of its messages (half a window each);
- ``redis_bytes_per_message``: the same over the whole run, once every window is full;
- ``disk_bytes_per_message``: the store's size on disk (indexes included) per message;
- ``archive_lag_p99_ms``: from a send's acknowledgement until the store has it, at
  ``--rate`` messages/s (or as fast as the process goes, reported beside it), sent by this
  process or (``--senders N``) by N other nodes in processes of their own, each archiving
  what it sends as every node does; and how fast the archiver alone copies a backlog, with
  its CPU per message;
- ``page_p99_ms_hot`` / ``page_p99_ms_cold`` / ``page_p99_ms_boundary``: ``chat.history``
  of 50 messages inside the window (Redis), below it (the store), and straddling it;
- ``search_p99_ms``: ``chat.search`` over one user's conversations for Latin and CJK terms,
  rare (one message in a thousand) and common (one in five);
- ``quiet_user_search_p99_ms`` / ``quiet_user_page_p99_ms``: the same search, and pages
  ending anywhere in their history, of a user in ``QUIET_CONVS`` quiet conversations (a
  window and two pages of messages each, half sent before the busy conversations' and half
  after) beside the busy ones they are not in: what a user's search costs by their own
  conversations rather than by the store's size. The hits found are checked against the
  quiet conversations' texts (``quiet_user_search_hits`` / ``_expected``).

``--json PATH`` writes the figures; its ``summary`` holds the worse of the stores for each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import random
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import psutil
import psycopg
import redis.asyncio as redis
from aiohttp import web

from benchmarks.common import fmt, goal, goal_table, ms, percentile, run_main, table, write_json
from benchmarks.procs import run_loop
from chat import wire as w
from chat.history.archiver import PASS_CONVS, Archiver
from chat.history.store import Head, HistoryStore, LogEvent
from chat.service import ChatService
from huddle.app import ARCHIVER, HISTORY, create_app
from huddle.config import Settings
from huddle.redis_server import spawn_sync
from signaling.keys import conv_key
from signaling.server import HUB

GROUP: Final = 5  # members of each conversation
SEARCHER: Final = "u0"  # a member of the first SEARCH_CONVS conversations
SEARCH_CONVS: Final = 100
PAGE: Final = 50
# Sends in flight at once while seeding.
SEED_CONCURRENCY: Final = 64
PACED_IN_FLIGHT: Final = 256
SETTLE_S: Final = 600.0
# settle() gives up, naming what is behind, when the store made no progress for this long:
# more than two of the archiver's sweeps (chat.history.archiver.SWEEP_S), while it tries a
# failed pass again within seconds.
STALL_S: Final = 150.0
# Conversations named in that error (of how many).
NAMED: Final = 10
# A sender node's whole life (see lag_in_senders), its store caught up included.
SENDER_TIMEOUT_S: Final = 900.0
LATIN: Final = (
    "plan",
    "budget",
    "draft",
    "review",
    "launch",
    "team",
    "notes",
    "figures",
    "quarter",
    "design",
    "client",
    "offer",
    "travel",
    "lunch",
    "update",
    "sprint",
    "ticket",
    "release",
    "schedule",
    "invoice",
    "deadline",
    "roadmap",
    "office",
    "coffee",
    "report",
    "numbers",
    "agenda",
    "friday",
    "monday",
    "slides",
    "demo",
    "feedback",
    "customer",
    "market",
)
CJK: Final = ("明天", "报告", "项目", "客户", "预算", "设计", "周五", "东京", "京都", "车站")
RARE: Final = {"latin rare": "zephyr", "cjk rare": "麒麟"}
COMMON: Final = {"latin common": "meeting", "cjk common": "会议"}
RARE_EVERY: Final = 1000  # messages of a conversation per rare term
RARE_STRIDE: Final = 617  # prime to RARE_EVERY: the offsets of 1,000 conversations differ
COMMON_EVERY: Final = 5
QUIET_USER: Final = "q0"  # the only member of QUIET_CONVS conversations not in any other
QUIET_CONVS: Final = 5
# Offsets (text_of) that put a rare term within the first 60 messages of a quiet
# conversation: Latin at 7 and 57, CJK at 50.
QUIET_OFFSETS: Final = (0, 451, 950)


class _Sender:
    """Sends the benchmark's messages: each conversation's members in turn, each text the
    next of that conversation's own sequence (``text_of``)."""

    def __init__(
        self,
        service: ChatService,
        rng: random.Random,
        members: dict[str, list[str]],
        offsets: dict[str, int],
        client_prefix: str,
        reader: Callable[[str], _Reader],
    ) -> None:
        self.service, self.rng, self.members, self.offsets = service, rng, members, offsets
        self.client_prefix, self.reader = client_prefix, reader
        self.sent = 0
        self.numbers: dict[str, int] = {}  # messages sent to each conversation
        # (conversation, seq, text) of each message sent, when kept (the quiet ones).
        self.kept: list[tuple[str, int, str]] | None = None

    async def send(self, conv: str) -> tuple[str, int, float]:
        self.sent += 1
        number = self.numbers[conv] = self.numbers.get(conv, 0) + 1
        text = text_of(self.rng, number, self.offsets[conv])
        user = self.members[conv][self.sent % GROUP]
        req = w.ChatSend(id="", conv=conv, client_id=f"{self.client_prefix}{self.sent}", text=text)
        reply = await self.service.send(self.reader(user), req)
        seq: int = reply.seq  # type: ignore[attr-defined]
        if self.kept is not None:
            self.kept.append((conv, seq, text))
        return conv, seq, time.monotonic()


class _Reader:
    """A device of ``identity`` as the chat service sees it; events go nowhere."""

    closed = False

    def __init__(self, identity: str) -> None:
        self._identity = identity

    @property
    def identity(self) -> str:
        return self._identity

    def send_event(self, event: Any) -> None:
        pass

    def queued(self) -> int:
        return 0


def text_of(rng: random.Random, n: int, offset: int = 0) -> str:
    """About 60 bytes of mixed text for the ``n``-th message of a conversation: one message
    in a thousand of each conversation carries each rare term, one in five each common one.
    ``offset`` (0-999, one per conversation) shifts where its rare messages fall, so that
    they are spread evenly over the conversations rather than all in the few that happen
    to take the same turns of a round-robin."""
    words = [*rng.sample(LATIN, 5), rng.choice(CJK)]
    if (n + offset) % RARE_EVERY == 7:
        words.append(RARE["latin rare"])
    if (n + offset) % RARE_EVERY == 501:
        words.append(RARE["cjk rare"])
    if n % COMMON_EVERY == 1:
        words.append(COMMON["latin common"])
    if n % COMMON_EVERY == 3:
        words.append(COMMON["cjk common"] + "室")
    rng.shuffle(words)
    return " ".join(words)


def rare_offsets(convs: Sequence[str]) -> dict[str, int]:
    """Each conversation's ``offset`` for :func:`text_of`: spread over one period in an
    order unrelated to the conversations' (the searcher is in the first ones), so that a
    run of fewer than a thousand messages a conversation still gives the searcher's
    conversations their share of the rare terms."""
    return {conv: i * RARE_STRIDE % RARE_EVERY for i, conv in enumerate(convs)}


@dataclass
class Appends:
    """When the store took each conversation's messages: (monotonic time, last seq) per
    transaction."""

    times: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    # Transactions of several conversations (the archiver's passes) and the conversations
    # they held.
    passes: int = 0
    pass_convs: int = 0
    # How long each of those transactions took the store (seconds).
    pass_seconds: list[float] = field(default_factory=list)

    def wrap(self, store: HistoryStore) -> None:
        inner = store.append

        async def append(conv: str, events: Sequence[LogEvent]) -> Head:
            head = await inner(conv, events)
            self.times.setdefault(conv, []).append((time.monotonic(), head.last_seq))
            return head

        many = store.append_many

        async def append_many(batches: Sequence[tuple[str, Sequence[LogEvent]]]) -> list[Head]:
            began = time.monotonic()
            heads = await many(batches)
            now = time.monotonic()
            self.pass_seconds.append(now - began)
            self.passes += 1
            self.pass_convs += len(batches)
            for (conv, _), head in zip(batches, heads, strict=True):
                self.times.setdefault(conv, []).append((now, head.last_seq))
            return heads

        store.append = append  # type: ignore[method-assign]
        store.append_many = append_many  # type: ignore[method-assign]

    def stored_at(self, conv: str, seq: int) -> float | None:
        for at, last in self.times.get(conv, ()):
            if last >= seq:
                return at
        return None

    def lags(self, acks: Sequence[tuple[str, int, float]]) -> list[float]:
        """Seconds from each acknowledgement (conversation, seq, monotonic time) until the
        store had the message (those it has)."""
        out = []
        for conv, seq, acked in acks:
            stored = self.stored_at(conv, seq)
            if stored is not None:
                out.append(max(0.0, stored - acked))
        return out


Send = Callable[[str], Awaitable[tuple[str, int, float]]]


async def paced(
    send: Send, convs: Sequence[str], rate: float, seconds: float, rng: random.Random
) -> tuple[list[tuple[str, int, float]], float]:
    """``rate`` sends a second for ``seconds`` to random conversations: their
    acknowledgements, and how long the sending took."""
    acks: list[tuple[str, int, float]] = []
    tasks: set[asyncio.Task[None]] = set()
    # Sends in flight are bounded: a process that cannot keep to the rate falls behind it
    # (the rate sent is reported) rather than queueing without end.
    in_flight = asyncio.Semaphore(PACED_IN_FLIGHT)

    async def paced_one(conv: str) -> None:
        try:
            acks.append(await send(conv))
        finally:
            in_flight.release()

    t0 = time.monotonic()
    for i in range(int(rate * seconds)):
        due = t0 + i / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await in_flight.acquire()
        task = asyncio.create_task(paced_one(rng.choice(convs)))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    while tasks:
        await asyncio.gather(*list(tasks))
    return acks, time.monotonic() - t0


async def lag_in_senders(
    args: argparse.Namespace,
    settings: Settings,
    convs: list[str],
    members: dict[str, list[str]],
    offsets: dict[str, int],
    appends: Appends,
    say: Callable[[str], None],
) -> tuple[list[float], int, float, float]:
    """The paced phase sent by ``args.senders`` other nodes, in processes of their own,
    ``args.rate`` between them: the lags of all (stored by any node, this one's
    ``appends`` included), how many were sent, the longest sender's time, and the CPU
    seconds of all the sender nodes (each process, its store's work included)."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    conf = {
        "settings": settings.model_dump(),
        "convs": convs,
        "members": members,
        "offsets": offsets,
        "rate": args.rate / args.senders,
        "seconds": args.lag_s,
    }
    procs = [
        context.Process(target=sender_node, args=({**conf, "index": i}, results), daemon=True)
        for i in range(args.senders)
    ]
    for proc in procs:
        proc.start()
    try:
        got = [await asyncio.to_thread(results.get, True, SENDER_TIMEOUT_S) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
    # Every node's appends (time.monotonic is one clock for the whole machine): a message
    # is stored when the first node stored it.
    stored = Appends()
    for one in [*got, {"times": appends.times}]:
        for conv, times in one["times"].items():
            stored.times.setdefault(conv, []).extend(tuple(t) for t in times)
    for times in stored.times.values():
        times.sort()
    acks = [(conv, int(seq), float(at)) for one in got for conv, seq, at in one["acks"]]
    seconds = max(one["seconds"] for one in got)
    say(f"{len(procs)} sender nodes: {len(acks):,} messages in {seconds:.1f} s")
    return stored.lags(acks), len(acks), seconds, sum(one["cpu"] for one in got)


def sender_node(conf: dict[str, Any], results: Any) -> None:
    """A process of :func:`lag_in_senders`: a node on the benchmark's Redis and store."""
    results.put(run_loop(_sender_node(conf)))


async def _sender_node(conf: dict[str, Any]) -> dict[str, Any]:
    settings = Settings(**conf["settings"])
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        service: ChatService = app[HUB].chat
        appends = Appends()
        appends.wrap(app[HISTORY])
        index = int(conf["index"])
        rng = random.Random(100 + index)
        convs: list[str] = conf["convs"]
        members: dict[str, list[str]] = conf["members"]
        offsets: dict[str, int] = conf["offsets"]
        send = _Sender(service, rng, members, offsets, f"s{index}-m", _Reader).send
        cpu = time.process_time()
        acks, seconds = await paced(send, convs, conf["rate"], conf["seconds"], rng)
        # Until the store has what this node sent (another node's archiver may have stored
        # some of it: the lags are worked out from every node's appends).
        last: dict[str, int] = {}
        for conv, seq, _ in acks:
            last[conv] = max(last.get(conv, 0), seq)
        began = time.monotonic()
        while True:
            heads = await app[HISTORY].heads(list(last))
            lagging = {c for c, s in last.items() if c not in heads or heads[c].last_seq < s}
            if not lagging:
                break
            if time.monotonic() - began > SETTLE_S:
                archiver = app[ARCHIVER]
                why = f"not within {SETTLE_S:.0f} s"
                raise RuntimeError(stalled(lagging, archiver.stuck, archiver.failures, why))
            await asyncio.sleep(0.1)
        cpu = time.process_time() - cpu
        return {"acks": acks, "times": appends.times, "seconds": seconds, "cpu": cpu}
    finally:
        await runner.cleanup()


async def used_memory(client: redis.Redis) -> int:
    info = await client.info("memory")
    return int(info["used_memory"])


async def used_cpu(client: redis.Redis) -> float:
    """CPU seconds the Redis server used so far."""
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def postgres_cpu(url: str | None) -> float:
    """CPU seconds of the PostgreSQL server at ``url`` (started by tests/postgres.py: its
    socket folder holds its data folder) and all its processes so far; 0 without one."""
    if url is None:
        return 0.0
    folder = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["host"][0]
    pid = int((Path(folder) / "data" / "postmaster.pid").read_text().split()[0])
    total = 0.0
    main = psutil.Process(pid)
    for proc in [main, *main.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


async def settle(service: ChatService, app: web.Application, convs: list[str]) -> None:
    """Until the store has every event and every window is trimmed. Raises, naming the
    conversations behind and the archiver's stuck ones, once the store made no progress
    for ``STALL_S`` (or after ``SETTLE_S`` in all)."""
    archiver = app[ARCHIVER]
    history = app[HISTORY]
    began = moved = time.monotonic()
    last: tuple[frozenset[str], int] | None = None
    while behind := await archiver.behind():
        heads = await history.heads(sorted(behind))
        now_at = (frozenset(behind), sum(h.ev for h in heads.values()))
        now = time.monotonic()
        if now_at != last:
            last, moved = now_at, now
        if now - moved > STALL_S or now - began > SETTLE_S:
            why = (
                f"no progress for {now - moved:.0f} s"
                if now - moved > STALL_S
                else f"not within {SETTLE_S:.0f} s"
            )
            raise RuntimeError(stalled(behind, archiver.stuck, archiver.failures, why))
        await asyncio.sleep(0.1)
    for conv in convs:
        head = await history.head(conv)
        if head is not None:
            await archiver.trim(conv, head)


async def archive_backlog(archiver: Archiver) -> None:
    """Archive whatever is behind in passes of ``PASS_CONVS``, as the archiver's loop does,
    until nothing is; raises (naming them) when only stuck conversations are left, which
    no pass archives, or after ``SETTLE_S``."""
    began = time.monotonic()
    while lagging := sorted(await archiver.behind()):
        if set(lagging) <= set(archiver.stuck) or time.monotonic() - began > SETTLE_S:
            why = "archiving the backlog"
            raise RuntimeError(stalled(set(lagging), archiver.stuck, archiver.failures, why))
        for start in range(0, len(lagging), PASS_CONVS):
            await archiver.archive_many(lagging[start : start + PASS_CONVS])


def stalled(behind: set[str], stuck: dict[str, str], failures: int, why: str) -> str:
    """What the benchmark says when the store did not catch up."""
    named = ", ".join(sorted(behind)[:NAMED])
    stuck_named = "; ".join(f"{c}: {e}" for c, e in sorted(stuck.items())[:NAMED])
    return (
        f"the history store did not catch up ({why}): "
        f"{len(behind)} conversations behind ({named}); {len(stuck)} stuck"
        f"{f' ({stuck_named})' if stuck else ''}; the archiver's failures in a row: {failures}"
    )


def disk_bytes(store_kind: str, data_dir: Path, url: str | None) -> int:
    if store_kind == "sqlite":
        return sum(p.stat().st_size for p in data_dir.glob("history.db*"))
    assert url is not None
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0]) if row else 0


async def timed(
    handler: Callable[[Any, Any], Awaitable[Any]], calls: Sequence[tuple[_Reader, Any]]
) -> list[float]:
    """How long each request took the handler, one after the other (seconds)."""
    out = []
    for who, req in calls:
        began = time.perf_counter()
        await handler(who, req)
        out.append(time.perf_counter() - began)
    return out


class Quiet:
    """The quiet user's conversations: ``messages`` each (a window and two pages), sent in
    turns, their texts kept to check the hits of the user's searches."""

    def __init__(self, window: int) -> None:
        self.messages = window + 2 * PAGE
        self.convs: list[str] = []
        self.members: dict[str, list[str]] = {}
        self.kept: list[tuple[str, int, str]] = []  # (conversation, seq, text) of each sent

    def add(self, conv: str, group: list[str]) -> None:
        self.convs.append(conv)
        self.members[conv] = group

    def sender(
        self, service: ChatService, rng: random.Random, reader: Callable[[str], _Reader]
    ) -> _Sender:
        offsets = {c: QUIET_OFFSETS[i % len(QUIET_OFFSETS)] for i, c in enumerate(self.convs)}
        sender = _Sender(service, rng, self.members, offsets, "q", reader)
        sender.kept = self.kept
        return sender

    async def seed(self, sender: _Sender, count: int) -> None:
        """``count`` more messages in each quiet conversation."""
        for _ in range(count):
            await asyncio.gather(*(sender.send(c) for c in self.convs))

    async def measure(
        self,
        service: ChatService,
        reader: Callable[[str], _Reader],
        args: argparse.Namespace,
        rng: random.Random,
    ) -> dict[str, Any]:
        """The quiet user's search p99 (each term, ``args.search_samples`` times, limit
        20), the hits against what their messages hold, and the p99 of ``args.samples``
        pages of 50 ending anywhere in their conversations."""
        who = reader(QUIET_USER)
        searches: dict[str, list[float]] = {}
        found: dict[str, int] = {}
        expected: dict[str, int] = {}
        foreign = 0  # hits in conversations not theirs (none, or search leaks)
        mine = set(self.convs)
        for kind, term in {**RARE, **COMMON}.items():
            query = w.ChatSearch(id="", query=term, limit=20)
            reply = await service.search(who, query)
            hits = reply.hits  # type: ignore[attr-defined]
            found[kind] = len(hits)
            foreign += sum(1 for h in hits if h.conv not in mine)
            # Their messages that hold the term: a Latin word, or CJK characters anywhere.
            holding = sum(
                1
                for _, _, text in self.kept
                if (term in text.split(" ") if term.isascii() else term in text)
            )
            expected[kind] = min(query.limit, holding)
            searches[kind] = await timed(service.search, [(who, query)] * args.search_samples)
        pages: list[tuple[_Reader, w.ChatHistory]] = []
        below = 0
        for _ in range(args.samples):
            conv = rng.choice(self.convs)
            meta = await service.store.meta(conv)
            assert meta is not None
            before = rng.randrange(2, meta.last_seq + 2)
            below += before - 1 <= meta.cold_seq
            pages.append((who, w.ChatHistory(id="", conv=conv, before=before, limit=PAGE)))
        took = await timed(service.history, pages)
        every = [s for v in searches.values() for s in v]
        return {
            "quiet_user_conversations": len(self.convs),
            "quiet_user_messages": self.messages * len(self.convs),
            "quiet_user_search_p99_ms": ms(percentile(every, 99)),
            "quiet_user_search_p99_ms_by_kind": {
                k: ms(percentile(v, 99)) for k, v in searches.items()
            },
            "quiet_user_search_hits": found,
            "quiet_user_search_expected": expected,
            "quiet_user_search_foreign_hits": foreign,
            "quiet_user_page_p99_ms": ms(percentile(took, 99)),
            "quiet_user_pages_timed": {"all": len(took), "below_window": below},
        }


async def run_store(
    store_kind: str,
    args: argparse.Namespace,
    folder: Path,
    url: str | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    rng = random.Random(1)
    proc, redis_url = spawn_sync(folder / "redis")
    client = redis.Redis.from_url(redis_url)
    data_dir = folder / "data"
    settings = Settings(
        redis_url=redis_url,
        data_dir=data_dir,
        port=0,
        log_format="text",
        log_level="warning",
        sfu_workers=0,
        chat_window_events=args.window,
        chat_window_days=0,
        chat_send_per_s=1_000_000,
        history=store_kind,
        database_url=url,
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        service: ChatService = app[HUB].chat
        appends = Appends()
        appends.wrap(app[HISTORY])
        readers: dict[str, _Reader] = {}

        def reader(user: str) -> _Reader:
            return readers.setdefault(user, _Reader(user))

        users = max(GROUP, args.conversations // 2)
        convs: list[str] = []
        members: dict[str, list[str]] = {}
        for i in range(args.conversations):
            group = [SEARCHER] if i < SEARCH_CONVS else []
            while len(group) < GROUP:
                user = f"u{rng.randrange(1, users)}"
                if user not in group:
                    group.append(user)
            create = w.ChatCreate(id="", kind="group", name=f"group {i}", members=group[1:])
            created = await service.create(reader(group[0]), create)
            conv = created.conv.conv  # type: ignore[attr-defined]
            convs.append(conv)
            members[conv] = group
        # The quiet user's conversations, with users of their own; half their messages now
        # (the oldest of the store), half after the busy ones' (below).
        quiet = Quiet(args.window)
        for i in range(QUIET_CONVS):
            group = [QUIET_USER, *(f"q{i}-{k}" for k in range(1, GROUP))]
            create = w.ChatCreate(id="", kind="group", name=f"quiet {i}", members=group[1:])
            created = await service.create(reader(group[0]), create)
            quiet.add(created.conv.conv, group)  # type: ignore[attr-defined]
        quiet_send = quiet.sender(service, rng, reader)
        await quiet.seed(quiet_send, quiet.messages // 2)
        await settle(service, app, [*convs, *quiet.convs])
        baseline = await used_memory(client)
        offsets = rare_offsets(convs)
        send = _Sender(service, rng, members, offsets, "m", reader).send

        async def seed(count: int) -> None:
            order = [convs[i % len(convs)] for i in range(count)]
            for start in range(0, count, SEED_CONCURRENCY):
                await asyncio.gather(*(send(c) for c in order[start : start + SEED_CONCURRENCY]))

        # Half a window in every conversation: nothing trimmed yet.
        half = max(1, min(args.window // 2 - 2, args.messages // len(convs)))
        began = time.monotonic()
        await seed(half * len(convs))
        await settle(service, app, convs)
        in_window = half * len(convs)
        window_bytes = (await used_memory(client) - baseline) / in_window
        say(f"{store_kind}: {in_window:,} messages in the windows, {window_bytes:,.0f} B each")

        # The rest, as fast as the service takes them.
        rest = max(0, args.messages - in_window)
        await seed(rest)
        seed_s = time.monotonic() - began
        await settle(service, app, convs)
        total = in_window + rest
        redis_bytes = (await used_memory(client) - baseline) / total
        say(f"{store_kind}: {total:,} messages seeded in {seed_s:.1f} s, {redis_bytes:,.0f} B each")
        disk = disk_bytes(store_kind, data_dir, url) / total

        # Archive lag at a paced rate: sent here, or by other nodes (processes) on the
        # same Redis and store, each archiving what it sends.
        pg_cpu = postgres_cpu(url)
        pass_store: dict[str, float | None] | None = None  # by this process's passes
        if args.senders:
            redis_cpu = await used_cpu(client)
            lags, n_acks, paced_s, sender_cpu = await lag_in_senders(
                args, settings, convs, members, offsets, appends, say
            )
            phase_cpu: dict[str, float] = {
                "senders": sender_cpu,
                "redis": await used_cpu(client) - redis_cpu,
            }
        else:
            passes, pass_convs = appends.passes, appends.pass_convs
            timed_passes = len(appends.pass_seconds)
            node_cpu, redis_cpu = time.process_time(), await used_cpu(client)
            acks, paced_s = await paced(send, convs, args.rate, args.lag_s, rng)
            await settle(service, app, convs)
            lags, n_acks = appends.lags(acks), len(acks)
            phase_cpu = {
                "node": time.process_time() - node_cpu,
                "redis": await used_cpu(client) - redis_cpu,
                "passes": appends.passes - passes,
                "pass_convs": appends.pass_convs - pass_convs,
            }
            pass_s = appends.pass_seconds[timed_passes:]
            pass_store = {
                "p50": ms(percentile(pass_s, 50)),
                "p90": ms(percentile(pass_s, 90)),
                "max": ms(max(pass_s, default=None)),
            }
        if url is not None:
            # Ended processes (a backend of a sender node) are not counted.
            phase_cpu["postgres"] = postgres_cpu(url) - pg_cpu
        total += n_acks

        # The archiver alone: messages stored while it was not told of them, then archived
        # in passes as its run loop does, timed and clocked.
        archiver = app[ARCHIVER]
        service.store.on_logged = None
        n_alone = max(1, args.messages // 10)
        await seed(n_alone)
        service.store.on_logged = archiver.note
        began, cpu = time.perf_counter(), time.process_time()
        await archive_backlog(archiver)
        alone_s, alone_cpu = time.perf_counter() - began, time.process_time() - cpu
        total += n_alone

        # The rest of the quiet conversations' messages, the newest of the store.
        await quiet.seed(quiet_send, quiet.messages - quiet.messages // 2)
        await settle(service, app, quiet.convs)

        # Pages inside the window, below it, and across its edge.
        metas = {c: await service.store.meta(c) for c in convs}
        hot: list[tuple[_Reader, w.ChatHistory]] = []
        cold: list[tuple[_Reader, w.ChatHistory]] = []
        edge: list[tuple[_Reader, w.ChatHistory]] = []
        for _ in range(args.samples):
            conv = rng.choice(convs)
            meta = metas[conv]
            assert meta is not None
            who = reader(members[conv][0])
            hot.append((who, w.ChatHistory(id="", conv=conv, limit=PAGE)))
            if meta.cold_seq > PAGE:
                before = rng.randrange(PAGE + 1, meta.cold_seq + 1)
                cold.append((who, w.ChatHistory(id="", conv=conv, before=before, limit=PAGE)))
                at = meta.cold_seq + 1 + PAGE // 2
                edge.append((who, w.ChatHistory(id="", conv=conv, before=at, limit=PAGE)))
        page_hot = await timed(service.history, hot)
        page_cold = await timed(service.history, cold)
        page_edge = await timed(service.history, edge)

        # Search over one user's conversations.
        searches: dict[str, list[float]] = {}
        found: dict[str, int] = {}
        searcher = reader(SEARCHER)
        for kind, term in {**RARE, **COMMON}.items():
            query = w.ChatSearch(id="", query=term, limit=20)
            reply = await service.search(searcher, query)
            found[kind] = len(reply.hits)  # type: ignore[attr-defined]
            searches[kind] = await timed(service.search, [(searcher, query)] * args.search_samples)
        all_searches = [s for v in searches.values() for s in v]
        quiet_figures = await quiet.measure(service, reader, args, rng)
        say(
            f"{store_kind}: quiet user: search p99 {fmt(quiet_figures['quiet_user_search_p99_ms'])}"
            f" ms, page p99 {fmt(quiet_figures['quiet_user_page_p99_ms'])} ms"
        )
        memory = await used_memory(client)
        async with client.pipeline(transaction=False) as pipe:
            for conv in convs:
                pipe.hlen(conv_key(conv, "msgs"))
                pipe.xlen(conv_key(conv, "events"))
            counts = await pipe.execute()
        return {
            "redis_messages_kept": sum(counts[0::2]),
            "redis_events_kept": sum(counts[1::2]),
            "pages_timed": {"hot": len(page_hot), "cold": len(page_cold), "edge": len(page_edge)},
            "store": store_kind,
            "messages": total,
            "conversations": len(convs),
            "window": args.window,
            "seed_messages_per_s": (in_window + rest) / seed_s if seed_s > 0 else None,
            "redis_used_memory": memory,
            "redis_baseline": baseline,
            "window_bytes_per_message": window_bytes,
            "redis_bytes_per_message": redis_bytes,
            "disk_bytes_per_message": disk,
            "archive": {
                "rate_asked": args.rate,
                "senders": args.senders,
                "rate_sent": n_acks / paced_s if paced_s > 0 else None,
                "messages": n_acks,
                "lag_p50_ms": ms(percentile(lags, 50)),
                "lag_p99_ms": ms(percentile(lags, 99)),
                # CPU per message sent of the whole phase, its archiving included: this
                # process (or with senders the sender nodes' processes), Redis, and the
                # PostgreSQL server.
                "paced_cpu_us_per_message": {
                    k: v / n_acks * 1e6
                    for k, v in phase_cpu.items()
                    if k in ("node", "redis", "senders", "postgres")
                }
                if n_acks
                else None,
                "events_per_conversation_per_pass": n_acks / phase_cpu["pass_convs"]
                if phase_cpu.get("pass_convs")
                else None,
                "passes": phase_cpu.get("passes"),
                # The store's transaction of each pass of the phase (append_many), in ms.
                "pass_store_ms": pass_store,
                "alone_messages": n_alone,
                "alone_messages_per_s": n_alone / alone_s if alone_s > 0 else None,
                "alone_cpu_us_per_message": alone_cpu / n_alone * 1e6,
            },
            "page_p99_ms_hot": ms(percentile(page_hot, 99)),
            "page_p99_ms_cold": ms(percentile(page_cold, 99)),
            "page_p99_ms_boundary": ms(percentile(page_edge, 99)),
            "search_p99_ms": ms(percentile(all_searches, 99)),
            "search_p99_ms_by_kind": {k: ms(percentile(v, 99)) for k, v in searches.items()},
            "search_hits": found,
            **quiet_figures,
        }
    finally:
        await runner.cleanup()
        await client.aclose()
        proc.terminate()
        proc.wait(timeout=10)


@contextlib.contextmanager
def postgres_url(kinds: list[str]) -> Iterator[str | None]:
    if "postgres" not in kinds:
        yield None
        return
    from tests.postgres import postgres_server  # the tests' throwaway server

    with postgres_server() as server:
        yield server.create_database()


def worst(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None]
    return max(values) if values else None


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    kinds = args.stores.split(",")
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="huddle-history-load-") as tmp,
        postgres_url(kinds) as url,
    ):
        for kind in kinds:
            folder = Path(tmp) / kind
            results.append(
                await run_store(kind, args, folder, url if kind == "postgres" else None, say)
            )
    for r in results:
        r["archive_lag_p99_ms"] = r["archive"]["lag_p99_ms"]
    summary = {
        key: worst(results, key)
        for key in (
            "redis_bytes_per_message",
            "window_bytes_per_message",
            "disk_bytes_per_message",
            "page_p99_ms_cold",
            "search_p99_ms",
            "archive_lag_p99_ms",
        )
    }
    summary["page_p99_ms_hot"] = worst(results, "page_p99_ms_hot")
    summary["page_p99_ms_boundary"] = worst(results, "page_p99_ms_boundary")
    summary["quiet_user_search_p99_ms"] = worst(results, "quiet_user_search_p99_ms")
    summary["quiet_user_page_p99_ms"] = worst(results, "quiet_user_page_p99_ms")
    goals = {
        "redis_bytes_per_message": goal(
            summary["redis_bytes_per_message"], "<= 150", lambda v: v <= 150
        ),
        "window_bytes_per_message": goal(
            summary["window_bytes_per_message"], "<= 600", lambda v: v <= 600
        ),
        "page_p99_ms_cold": goal(summary["page_p99_ms_cold"], "< 30", lambda v: v < 30),
        "search_p99_ms": goal(summary["search_p99_ms"], "< 150", lambda v: v < 150),
        "archive_lag_p99_ms": goal(summary["archive_lag_p99_ms"], "< 1000", lambda v: v < 1000),
    }
    rows = [
        (
            r["store"],
            f"{r['messages']:,}",
            fmt(r["window_bytes_per_message"], 0),
            fmt(r["redis_bytes_per_message"], 0),
            fmt(r["disk_bytes_per_message"], 0),
            fmt(r["archive"]["rate_sent"], 0),
            fmt(r["archive"]["lag_p99_ms"]),
            fmt(r["archive"]["alone_messages_per_s"], 0),
            fmt(r["page_p99_ms_hot"]),
            fmt(r["page_p99_ms_cold"]),
            fmt(r["page_p99_ms_boundary"]),
            fmt(r["search_p99_ms"]),
        )
        for r in results
    ]
    header = (
        "store",
        "messages",
        "window B/msg",
        "Redis B/msg",
        "disk B/msg",
        "paced msg/s",
        "lag p99 ms",
        "archive alone msg/s",
        "page hot p99",
        "page cold p99",
        "page edge p99",
        "search p99",
    )
    kinds = [*RARE, *COMMON]
    quiet_rows = [
        (
            r["store"],
            fmt(r["quiet_user_page_p99_ms"]),
            fmt(r["quiet_user_search_p99_ms"]),
            *(fmt(r["quiet_user_search_p99_ms_by_kind"][k]) for k in kinds),
            " ".join(
                f"{r['quiet_user_search_hits'][k]}/{r['quiet_user_search_expected'][k]}"
                for k in kinds
            ),
        )
        for r in results
    ]
    quiet_header = (
        f"quiet user ({QUIET_CONVS} convs)",
        "page p99",
        "search p99",
        *kinds,
        "hits/expected",
    )
    for line in [*table(rows, header), "", *table(quiet_rows, quiet_header), *goal_table(goals, 1)]:
        print(line)
    config = {
        k: getattr(args, k)
        for k in (
            "messages",
            "conversations",
            "window",
            "rate",
            "lag_s",
            "senders",
            "samples",
            "stores",
        )
    }
    return {"config": config, "summary": summary, "goals": goals, "results": results}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.history_load", description=__doc__)
    p.add_argument(
        "--messages", type=int, default=200_000, help="messages seeded (full run: 1000000)"
    )
    p.add_argument("--conversations", type=int, default=1000)
    p.add_argument("--window", type=int, default=100, help="chat_window_events of the node")
    p.add_argument("--rate", type=float, default=5000.0, help="messages/s of the archive-lag phase")
    p.add_argument("--lag-s", type=float, default=10.0, help="length of the archive-lag phase")
    p.add_argument(
        "--senders",
        type=int,
        default=0,
        help="nodes (processes) that send the archive-lag phase, each archiving what it "
        "sends (0: this process sends it)",
    )
    p.add_argument("--samples", type=int, default=500, help="pages timed of each kind")
    p.add_argument("--search-samples", type=int, default=50, help="searches timed per term")
    p.add_argument("--stores", default="sqlite,postgres", help="sqlite, postgres or both")
    p.add_argument("--quick", action="store_true", help="a small run (tests use it)")
    p.add_argument("--json", type=Path, help="write the figures here")
    args = p.parse_args(argv)
    if args.quick:
        args.messages, args.conversations, args.window = 3000, 20, 40
        args.rate, args.lag_s, args.samples, args.search_samples = 300.0, 1.0, 40, 5
    for kind in args.stores.split(","):
        if kind not in ("sqlite", "postgres"):
            p.error(f"--stores: unknown store {kind!r}")
    if args.senders < 0:
        p.error("--senders must be 0 or more")
    if args.messages < 1 or args.conversations < 1 or args.window < 10 or args.rate <= 0:
        p.error("--messages, --conversations and --rate must be positive, --window at least 10")
    return args


def main() -> int:
    args = parse()
    figures = run_loop(main_async(args))  # the node's loop
    if args.json is not None:
        write_json(args.json, "history_load", figures)
    return 0


if __name__ == "__main__":
    run_main(main)

"""The archiver never stalls silently: a pass that failed (the store away for a moment) is
tried again within seconds, not at the next sweep; a conversation whose log could not be
copied is archived once it can be; an error nothing expected does not end it. Each with a
real Redis and a real store, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
import psycopg
import pytest
import redis.asyncio as redis

from benchmarks import history_load
from chat.history import archiver as archiver_module
from chat.history import postgres as postgres_module
from chat.history import sqlite as sqlite_module
from chat.history.events import decode_event
from chat.history.sqlite import SQLiteHistory
from chat.store import ChatStore
from huddle.app import ARCHIVER, HISTORY
from huddle.chat import ChatClient
from signaling.keys import conv_key
from signaling.server import HUB
from tests.conftest import StartNode
from tests.functional.test_history_archive_functional import chat
from tests.helpers import Node, node_samples
from tests.postgres import Postgres, postgres

__all__ = ["postgres"]
STORES = ("sqlite", "postgres")
# Far below SWEEP_S (60 s): only a retry of the failed pass catches up this soon.
RECOVER_S = 5.0
SEEN_S = 10.0


async def start(
    kind: str, start_node: StartNode, request: pytest.FixtureRequest, **settings: Any
) -> Node:
    if kind == "postgres":
        server: Postgres = request.getfixturevalue("postgres")
        settings["database_url"] = server.create_database()
    return await start_node(chat_send_per_s=1000, **settings)


async def stored(redis_side: ChatStore, node: Node, conv: str, within: float) -> None:
    """Until the node's store has every event of ``conv``'s log (at most ``within`` s)."""
    last_ev = await redis_side.conv_head(conv)
    async with asyncio.timeout(within):
        while True:
            head = await node.app[HISTORY].head(conv)
            if head is not None and head.ev >= last_ev:
                return
            await asyncio.sleep(0.05)


async def logged(caplog: pytest.LogCaptureFixture, message: str, within: float) -> None:
    async with asyncio.timeout(within):
        while not [r for r in caplog.records if r.getMessage() == message]:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def metric(node: Node, sample: str) -> float:
    """One sample of the node's /metrics."""
    found = await node_samples(node.url, sample)
    assert len(found) == 1, sample
    return found[0].value


async def health(node: Node) -> tuple[int, dict[str, Any]]:
    """The node's /healthz: its status code and its history part."""
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/healthz") as resp:
        body = await resp.json()
        return resp.status, body["history"]


def count(caplog: pytest.LogCaptureFixture, message: str) -> int:
    return len([r for r in caplog.records if r.getMessage() == message])


async def make_stuck(node: Node, alice: ChatClient, redis_side: ChatStore, conv: str) -> None:
    """Give the store a copy of ``conv`` of another epoch than its log's (as when Redis
    lost the log and made it anew): the archiver cannot take its next event."""
    store = node.app[HISTORY]
    for i in range(3):
        await alice.send(conv, f"line {i}")
    await stored(redis_side, node, conv, SEEN_S)
    events = await redis_side.events_after(conv_key(conv, "events"), 0, 100)
    await store.delete(conv)
    await store.append(
        conv, [msgspec.structs.replace(decode_event(e), epoch="stale") for _, e in events]
    )
    await alice.send(conv, "into a log the store does not know")
    async with asyncio.timeout(SEEN_S):
        while conv not in node.app[ARCHIVER].stuck:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert "epoch" in node.app[ARCHIVER].stuck[conv]


@pytest.mark.parametrize("kind", STORES)
async def test_a_failed_pass_is_tried_again_within_seconds(
    kind: str,
    start_node: StartNode,
    redis_client: redis.Redis,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The store away for a moment (SQLite: its file locked by another process for longer
    than the busy timeout; PostgreSQL: the server stopped, then started again) fails a
    pass; once it is back, the store catches up within seconds."""
    caplog.set_level(logging.WARNING, "huddle.chat")
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_MS", 200)
    node = await start(kind, start_node, request)
    alice = await chat(node, "alice")
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    conv = (await alice.create("group", "g", ["bob"])).conv
    await alice.send(conv, "before")
    await stored(redis_side, node, conv, SEEN_S)
    store = node.app[HISTORY]
    locker: sqlite3.Connection | None = None
    if isinstance(store, SQLiteHistory):
        locker = sqlite3.connect(store.path, isolation_level=None, timeout=5)
        locker.execute("BEGIN IMMEDIATE")
    else:
        server: Postgres = request.getfixturevalue("postgres")
        await asyncio.to_thread(server.stop)
    assert await health(node) == (
        200,
        {"store": kind, "archiver": "running", "failures": 0, "stuck": 0, "restarts": 0},
    )
    try:
        await alice.send(conv, "while the store is away")
        await logged(caplog, "chat archiving failed", SEEN_S)
        # /healthz tells it, and the node stays in service: chat goes on from Redis.
        status, history = await health(node)
        assert status == 200 and history["failures"] >= 1, history
    finally:
        if locker is not None:
            locker.rollback()
            locker.close()
        else:
            await asyncio.to_thread(server.start)
    await stored(redis_side, node, conv, RECOVER_S)
    await alice.send(conv, "after")
    await stored(redis_side, node, conv, RECOVER_S)
    assert node.app[ARCHIVER].failures == 0
    assert (await health(node))[1]["failures"] == 0


@pytest.mark.parametrize("kind", STORES)
async def test_a_stuck_conversation_is_archived_once_it_can_be(
    kind: str,
    start_node: StartNode,
    redis_client: redis.Redis,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store whose copy of a conversation is of another life of its log (another epoch)
    cannot take its events: reported once, however many sweeps try it again. Once the
    stale copy is deleted, a sweep archives it, with no write to note it."""
    caplog.set_level(logging.INFO, "huddle.chat")
    monkeypatch.setattr(archiver_module, "SWEEP_S", 0.3)
    node = await start(kind, start_node, request)
    archiver, store = node.app[ARCHIVER], node.app[HISTORY]
    alice = await chat(node, "alice")
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    conv = (await alice.create("group", "g", ["bob"])).conv
    await make_stuck(node, alice, redis_side, conv)
    await asyncio.sleep(1.0)  # a few sweeps
    assert count(caplog, "chat log cannot be archived") == 1
    assert await metric(node, "huddle_chat_archive_stuck") == 1
    assert (await health(node))[1]["stuck"] == 1
    assert (await store.head(conv)).epoch == "stale"  # type: ignore[union-attr]

    await store.delete(conv)
    await stored(redis_side, node, conv, RECOVER_S)
    assert conv not in archiver.stuck
    assert count(caplog, "chat log archived again") == 1
    assert await metric(node, "huddle_chat_archive_stuck") == 0
    assert (await health(node))[1]["stuck"] == 0
    await alice.send(conv, "and on")
    await stored(redis_side, node, conv, RECOVER_S)
    assert count(caplog, "chat log cannot be archived") == 1


@pytest.mark.parametrize("kind", STORES)
async def test_the_archiver_outlives_an_error_nothing_expected(
    kind: str,
    start_node: StartNode,
    redis_client: redis.Redis,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A store call that raises what no handler expects (here a cancellation the
    archiver's task was never given, as a library can leak one) is logged, and the
    archiver goes on: what was noted then is archived without another write."""
    node = await start(kind, start_node, request)
    store = node.app[HISTORY]
    alice = await chat(node, "alice")
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    conv = (await alice.create("group", "g", ["bob"])).conv
    await alice.send(conv, "before")
    await stored(redis_side, node, conv, SEEN_S)
    heads: Callable[..., Any] = store.heads
    raised: list[BaseException] = []

    async def once(convs: Any) -> Any:
        if not raised:
            raised.append(asyncio.CancelledError())
            raise raised[0]
        return await heads(convs)

    monkeypatch.setattr(store, "heads", once)
    await alice.send(conv, "when it raised")
    await stored(redis_side, node, conv, RECOVER_S)
    assert raised
    assert count(caplog, "chat archiver cancelled from below; it goes on") == 1
    assert await metric(node, "huddle_chat_archiver_restarts_total") == 1
    assert await metric(node, "huddle_chat_archiver_up") == 1
    await alice.send(conv, "after")
    await stored(redis_side, node, conv, RECOVER_S)


async def test_the_benchmarks_settle_names_what_stays_behind(
    start_node: StartNode,
    redis_client: redis.Redis,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """benchmarks/history_load.py waits for the store to catch up: when it makes no
    progress, it says which conversations are behind and which are stuck, in bounded
    time, rather than waiting on."""
    monkeypatch.setattr(history_load, "STALL_S", 1.0)
    node = await start("sqlite", start_node, request)
    alice = await chat(node, "alice")
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    conv = (await alice.create("group", "g", ["bob"])).conv
    fine = (await alice.create("group", "h", ["bob"])).conv
    await alice.send(fine, "archived")
    await make_stuck(node, alice, redis_side, conv)
    async with asyncio.timeout(SEEN_S):
        with pytest.raises(RuntimeError) as raised:
            await history_load.settle(node.app[HUB].chat, node.app, [conv, fine])
    said = str(raised.value)
    assert f"1 conversations behind ({conv})" in said
    assert f"1 stuck ({conv}: " in said and "epoch" in said
    # Its backlog phase (passes made by the benchmark itself) says the same at once.
    async with asyncio.timeout(SEEN_S):
        with pytest.raises(RuntimeError) as raised:
            await history_load.archive_backlog(node.app[ARCHIVER])
    assert f"1 stuck ({conv}: " in str(raised.value)


@pytest.mark.parametrize("kind", STORES)
async def test_a_conversation_that_cannot_be_read_holds_back_no_other(
    kind: str,
    start_node: StartNode,
    redis_client: redis.Redis,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A log holding an event this version cannot read (one a newer node wrote) is stuck,
    reported once; the conversations written beside it are archived within a pass's
    pause all along, not after a backoff grown by its failures."""
    caplog.set_level(logging.WARNING, "huddle.chat")
    monkeypatch.setattr(archiver_module, "SWEEP_S", 0.3)
    node = await start(kind, start_node, request)
    alice = await chat(node, "alice")
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    bad = (await alice.create("group", "bad", ["bob"])).conv
    good = (await alice.create("group", "good", ["bob"])).conv
    await alice.send(bad, "readable")
    await stored(redis_side, node, bad, SEEN_S)
    state = await redis_side.log_state(False, bad)
    ev = await redis_client.hincrby(conv_key(bad, "meta"), "last_ev", 1)
    assert ev == state.head + 1
    newer = {"type": "chat.pinned", "conv": bad, "ev": ev, "epoch": state.epoch, "seq": 1}
    await redis_client.xadd(conv_key(bad, "events"), {"e": msgspec.json.encode(newer)}, f"{ev}-1")
    async with asyncio.timeout(SEEN_S):
        while bad not in node.app[ARCHIVER].stuck:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert "not a conversation log event" in node.app[ARCHIVER].stuck[bad]
    for i in range(6):
        await alice.send(bad, f"after the unreadable one {i}")
        await alice.send(good, f"beside it {i}")
        await stored(redis_side, node, good, 2.0)
    assert count(caplog, "chat log cannot be archived") == 1
    assert node.app[ARCHIVER].failures == 0


async def test_a_conversation_another_session_holds_holds_back_no_other(
    start_node: StartNode,
    redis_client: redis.Redis,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """PostgreSQL: a conversation locked by another session that does not let go (a node
    stopped in the middle of its transaction) is tried again after a backoff of its own,
    alone, however often it is written; the others are archived meanwhile, and it is once
    the lock is gone."""
    caplog.set_level(logging.WARNING, "huddle.chat")
    monkeypatch.setattr(postgres_module, "LOCK_TIMEOUT_MS", 300)
    node = await start("postgres", start_node, request)
    alice = await chat(node, "alice")
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    held = (await alice.create("group", "held", ["bob"])).conv
    free = (await alice.create("group", "free", ["bob"])).conv
    await alice.send(held, "before")
    await stored(redis_side, node, held, SEEN_S)
    url = node.settings.database_url.get_secret_value()  # type: ignore[union-attr]
    other = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        # The key the store locks a conversation by (PostgresHistory._lock_conversation).
        await other.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (held,))
        for i in range(8):
            await alice.send(held, f"while it is held {i}")
            await alice.send(free, f"beside it {i}")
            await stored(redis_side, node, free, RECOVER_S)
        assert (await node.app[HISTORY].head(held)).ev < await redis_side.conv_head(held)  # type: ignore[union-attr]
        # Tried on its own backoff (0.5, 1, 2 s...), not in every pass its writes ask for
        # (each waiting for the lock: 10 tries over these writes, measured).
        tries = [r for r in caplog.records if getattr(r, "conv", None) == held]
        assert 1 <= len(tries) <= 5
    finally:
        await other.close()
    await stored(redis_side, node, held, RECOVER_S)
    assert node.app[ARCHIVER].stuck == {}


def put_row(node: Node, conv: str, seq: int) -> None:
    """A message row the store's head does not know of (a store edited by hand, restored
    in part): the archiver's insert of message ``seq`` then breaks its uniqueness."""
    store = node.app[HISTORY]
    row = (conv, seq, 0, "someone", b"{}")
    sql = "INSERT INTO messages (conv, seq, ts, sender, body) VALUES "
    if isinstance(store, SQLiteHistory):
        with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
            conn.execute(sql + "(?, ?, ?, ?, ?)", row)
        return
    url = node.settings.database_url.get_secret_value()  # type: ignore[union-attr]
    with psycopg.connect(url, autocommit=True) as pg:
        pg.execute(sql + "(%s, %s, %s, %s, %s)", row)


@pytest.mark.parametrize("kind", STORES)
async def test_a_conversation_the_store_refuses_holds_back_no_other(
    kind: str,
    start_node: StartNode,
    redis_client: redis.Redis,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A conversation whose events the database refuses (a row in the way of its next
    message) is stuck, reported once; a conversation archived in the same pass is
    archived all the same, now and at every sweep."""
    caplog.set_level(logging.WARNING, "huddle.chat")
    monkeypatch.setattr(archiver_module, "SWEEP_S", 0.3)
    node = await start(kind, start_node, request)
    alice = await chat(node, "alice")
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    bad = (await alice.create("group", "bad", ["bob"])).conv
    good = (await alice.create("group", "good", ["bob"])).conv
    sent = await alice.send(bad, "before")
    await stored(redis_side, node, bad, SEEN_S)
    await asyncio.to_thread(put_row, node, bad, sent.seq + 1)
    await alice.send(bad, "in the way")
    await alice.send(good, "beside it")  # within the pause: one pass for both
    await stored(redis_side, node, good, RECOVER_S)
    async with asyncio.timeout(SEEN_S):
        while bad not in node.app[ARCHIVER].stuck:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    await asyncio.sleep(1.0)  # a few sweeps, each trying it again
    await alice.send(good, "and on")
    await stored(redis_side, node, good, RECOVER_S)
    assert count(caplog, "chat log cannot be archived") == 1


@pytest.mark.parametrize("kind", STORES)
async def test_a_pass_that_keeps_failing_is_tried_one_conversation_at_a_time(
    kind: str,
    start_node: StartNode,
    redis_client: redis.Redis,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One conversation whose archiving fails in a way nothing expected (here the store
    raising ValueError for it, as a bug would) fails every pass it is in; after two such
    failures its pass is tried one conversation at a time, and the others are archived."""
    monkeypatch.setattr(archiver_module, "RETRY_FIRST_S", 0.1)
    node = await start(kind, start_node, request)
    store = node.app[HISTORY]
    alice = await chat(node, "alice")
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    bad = (await alice.create("group", "bad", ["bob"])).conv
    good = (await alice.create("group", "good", ["bob"])).conv
    await alice.send(bad, "before")
    await stored(redis_side, node, bad, SEEN_S)
    append_many, append = store.append_many, store.append

    async def many(batches: Any) -> Any:
        if any(conv == bad for conv, _ in batches):
            raise ValueError("a bug for this conversation")
        return await append_many(batches)

    async def one(conv: str, events: Any) -> Any:
        if conv == bad:
            raise ValueError("a bug for this conversation")
        return await append(conv, events)

    monkeypatch.setattr(store, "append_many", many)
    monkeypatch.setattr(store, "append", one)
    await alice.send(bad, "failing")
    await alice.send(good, "beside it")  # within the pause: one pass for both
    await stored(redis_side, node, good, RECOVER_S)
    for i in range(3):
        await alice.send(bad, f"still failing {i}")
        await alice.send(good, f"and on {i}")
        await stored(redis_side, node, good, RECOVER_S)
    monkeypatch.setattr(store, "append_many", append_many)
    monkeypatch.setattr(store, "append", append)
    await stored(redis_side, node, bad, RECOVER_S + archiver_module.RETRY_MAX_S)

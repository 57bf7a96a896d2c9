"""The archiver copies what the nodes acknowledged into the history store: every message,
edit, recall, reaction and receipt, in order, once; the store then answers pages and
searches as the Redis side does. Redis itself is left as it was (nothing trimmed)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis

from chat import wire as w
from chat.history import archiver as archiver_module
from chat.history.config import SQLITE_NAME
from chat.history.events import decode_event
from chat.history.sqlite import SQLiteHistory
from chat.history.store import HistoryStore
from chat.store import ChatStore
from huddle.app import ARCHIVER, HISTORY
from huddle.chat import ChatClient
from signaling.redis_client import RedisClient
from tests.conftest import StartNode
from tests.helpers import Node, node_samples
from tests.postgres import Postgres, postgres

__all__ = ["postgres"]
CAUGHT_UP_S = 20.0


async def chat(node: Node, identity: str) -> ChatClient:
    client = ChatClient(await node.client(identity))
    await client.sync()
    return client


async def chatter(alice: ChatClient, bob: ChatClient) -> list[str]:
    """A bit of everything the log carries, in two conversations; replies their ids."""
    group = (await alice.create("group", "planning", ["bob"])).conv
    for i in range(30):
        sender = alice if i % 3 else bob
        await sender.send(group, f"note {i} about the café 明天开会 #{i}")
    root = (await alice.send(group, "thread root: the launch")).seq
    for i in range(4):
        await bob.send(group, f"reply {i} on the launch", reply_to=root)
    await alice.request(w.ChatEdit(id="", conv=group, seq=3, text="note 1 edited: 京都车站"))
    await alice.request(w.ChatEdit(id="", conv=group, seq=3, text="note 1 edited twice"))
    await alice.request(w.ChatRecall(id="", conv=group, seq=4))
    await bob.request(w.ChatReact(id="", conv=group, seq=3, emoji="👍"))
    await alice.request(w.ChatReact(id="", conv=group, seq=3, emoji="👍"))
    await alice.request(w.ChatReact(id="", conv=group, seq=5, emoji="🎉"))
    await alice.request(w.ChatReact(id="", conv=group, seq=5, emoji="🎉", remove=True))
    await bob.read(group, 20)
    await bob.read(group, 35)
    await alice.request(w.ChatRename(id="", conv=group, name="launch planning"))
    await alice.request(w.ChatAdd(id="", conv=group, users=["cid"]))
    direct = (await alice.send(to="bob", text="a direct word about the café")).conv
    await bob.send(direct, "and my answer")
    await bob.read(direct, 2)
    return [group, direct]


async def caught_up(redis_side: ChatStore, store: HistoryStore, convs: list[str]) -> None:
    async with asyncio.timeout(CAUGHT_UP_S):
        for conv in convs:
            last_ev = await redis_side.conv_head(conv)
            while True:
                head = await store.head(conv)
                if head is not None and head.ev >= last_ev:
                    break
                await asyncio.sleep(0.05)


async def assert_same(
    redis_side: ChatStore, store: HistoryStore, convs: list[str], reader: ChatClient
) -> None:
    """The store holds what Redis holds, and answers as the node does."""
    for conv in convs:
        meta = await redis_side.meta(conv)
        assert meta is not None
        head = await store.head(conv)
        assert head is not None
        assert (head.ev, head.epoch, head.last_seq) == (meta.last_ev, meta.epoch, meta.last_seq)
        seqs = list(range(1, meta.last_seq + 1))
        stored = await store.messages(conv, seqs)
        assert stored == await redis_side.messages(conv, seqs)
        assert [m.seq for m in stored] == seqs
        for seq in seqs:
            assert await store.edits(conv, seq) == await redis_side.edits(conv, seq)
        members = await redis_side.members(conv)
        reads = {u: r for u, r in (await redis_side.reads(conv, members)).items() if r}
        assert await store.reads(conv) == reads
        for params in ({}, {"limit": 7}, {"before": 12, "limit": 5}, {"around": 31, "limit": 9}):
            assert await store.page(conv, **params) == await reader.history(conv, **params)
        roots = [m.seq for m in stored if m.thread is not None]
        for root in roots:
            reply = await reader.request(w.ChatThread(id="", conv=conv, root=root))
            assert await store.thread(conv, root, 0, 50) == reply.messages
    for query in ("café", "明天", "twice", "launch", "edited", "note 5", "车站", "note 2"):
        req = w.ChatSearch(id="", query=query, limit=50)
        reply = await reader.request(req)
        # Edited away (车站) and recalled (note 2): found by neither.
        assert bool(reply.hits) == (query not in ("车站", "note 2")), query
        assert await store.search(convs, req) == reply.hits, query


async def test_the_store_ends_equal_to_what_was_acknowledged(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    node = await start_node(chat_send_per_s=1000)
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    convs = await chatter(alice, bob)
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    store = node.app[HISTORY]
    await caught_up(redis_side, store, convs)
    await assert_same(redis_side, store, convs, bob)
    # Archiving again changes nothing.
    before = {c: await store.head(c) for c in convs}
    for conv in convs:
        assert await node.app[ARCHIVER].archive(conv) == before[conv]
    assert node.app[ARCHIVER].stuck == {}


async def test_a_node_resumes_from_what_the_store_has(
    start_node: StartNode,
    redis_client: redis.Redis,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Events a node acknowledged but never archived (it stopped first) are copied by the
    next node's sweep, from where the store stands, each once."""
    # node0 archives nothing: its archiver waits far longer than the test.
    monkeypatch.setattr(archiver_module, "ARCHIVE_DELAY_S", 3600.0)
    first = await start_node(chat_send_per_s=1000)
    alice, bob = await chat(first, "alice"), await chat(first, "bob")
    convs = await chatter(alice, bob)
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    assert await first.app[HISTORY].head(convs[0]) is None
    await first.runner.cleanup()
    # The next node's store already has the first part of one log, as if its archiver had
    # been stopped half way; a small batch makes the copy take several transactions.
    seeded = await SQLiteHistory.open(tmp_path / "node1" / SQLITE_NAME)
    try:
        part = await redis_side.events_after(f"huddle:{{conv:{convs[0]}}}:events", 0, 17)
        await seeded.append(convs[0], [decode_event(blob) for _, blob in part])
    finally:
        await seeded.close()
    monkeypatch.setattr(archiver_module, "ARCHIVE_DELAY_S", 0.05)
    monkeypatch.setattr(archiver_module, "ARCHIVE_BATCH", 7)
    second = await start_node(chat_send_per_s=1000)
    reader = await chat(second, "bob")
    await caught_up(redis_side, second.app[HISTORY], convs)
    await assert_same(redis_side, second.app[HISTORY], convs, reader)


async def test_two_nodes_archive_into_one_postgres(
    start_node: StartNode, redis_client: redis.Redis, postgres: Postgres
) -> None:
    url = postgres.create_database()
    one, two = (
        await start_node(database_url=url, chat_send_per_s=1000),
        await start_node(database_url=url, chat_send_per_s=1000),
    )
    alice, bob = await chat(one, "alice"), await chat(two, "bob")
    convs = await chatter(alice, bob)
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    await caught_up(redis_side, one.app[HISTORY], convs)
    await assert_same(redis_side, two.app[HISTORY], convs, bob)


async def test_a_log_trimmed_before_the_store_had_it_is_copied_whole(
    start_node: StartNode, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A conversation that outgrew its log before any store had it (as one from before the
    store existed has): copied whole from Redis, then followed by its log again."""
    monkeypatch.setattr(archiver_module, "ARCHIVE_DELAY_S", 3600.0)
    settings = {
        "chat_send_per_s": 1000,
        "chat_replay_events": 100,
        "rate_per_s": 1000.0,
        "rate_burst": 1000,
    }
    first = await start_node(**settings)
    alice, bob = await chat(first, "alice"), await chat(first, "bob")
    convs = await chatter(alice, bob)
    for i in range(150):
        await (bob if i % 2 else alice).send(convs[0], f"more words {i}")
    await bob.read(convs[0], 150)
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    log_start = await redis_side.first_event(f"huddle:{{conv:{convs[0]}}}:events")
    assert log_start is not None and log_start > 1, "the log was not trimmed"
    await first.runner.cleanup()

    monkeypatch.setattr(archiver_module, "ARCHIVE_DELAY_S", 0.05)
    second = await start_node(**settings)
    reader = await chat(second, "bob")
    await caught_up(redis_side, second.app[HISTORY], convs)
    await assert_same(redis_side, second.app[HISTORY], convs, reader)
    await reader.send(convs[0], "after the copy")
    await caught_up(redis_side, second.app[HISTORY], convs)
    await assert_same(redis_side, second.app[HISTORY], convs, reader)
    assert second.app[ARCHIVER].stuck == {}


async def test_writes_within_the_pause_are_archived_in_one_pass(
    start_node: StartNode, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pass costs about as much per conversation as per event: the archiver waits
    ``ARCHIVE_DELAY_S`` after a write, and what was written meanwhile, in any conversation,
    goes into the store together."""
    node = await start_node(chat_send_per_s=1000)
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    store = node.app[HISTORY]
    direct = (await alice.send(to="bob", text="first")).conv
    await caught_up(ChatStore(redis_client, 20_000, 5_000), store, [direct])
    passes: list[list[str]] = []
    append_many = store.append_many

    async def counted(batches: Any) -> Any:
        passes.append([conv for conv, _ in batches])
        return await append_many(batches)

    monkeypatch.setattr(store, "append_many", counted)
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    group = (await alice.create("group", "g", ["bob"])).conv
    await caught_up(redis_side, store, [group])
    passes.clear()
    # Further apart than a pass used to wait (50 ms), well within the pause.
    for i in range(3):
        await (alice if i % 2 else bob).send(direct if i < 2 else group, f"m{i}")
        await asyncio.sleep(0.06)
    await caught_up(redis_side, store, [direct, group])
    assert passes == [sorted([direct, group])]


@pytest.mark.redis_cluster
async def test_logs_after_reads_each_log_after_the_event_given(redis_client: RedisClient) -> None:
    """An archiving pass's read of many logs at once (one XREAD on one Redis, a pipeline on
    a cluster): each log's entries above its event, in order, at most ``count`` of them,
    and the logs with none left out; as the XRANGE of ``events_after`` reads one."""
    chat_store = ChatStore(redis_client, 20_000, 5_000)
    keys = [f"huddle:{{conv:logs-{i}}}:events" for i in range(4)]
    for i, key in enumerate(keys):
        for ev in range(1, 2 + 3 * i):
            # As chat/lua/log.lua numbers them.
            await redis_client.xadd(key, {"e": f"{key}/{ev}"}, id=f"{ev}-1")
    after = {keys[0]: 1, keys[1]: 2, keys[2]: 3, keys[3]: 0, "huddle:{conv:none}:events": 0}
    got = await chat_store.logs_after(after, 4)
    assert list(got) == [keys[1], keys[2], keys[3]]  # keys[0]: its one event is read already
    for key, entries in got.items():
        expected = await chat_store.events_after(key, after[key], 4)
        assert [(int(i.decode().split("-")[0]), f[b"e"]) for i, f in entries] == expected
        assert len(entries) == min(4, len(expected)) and expected
    assert [f[b"e"] for _, f in got[keys[2]]] == [f"{keys[2]}/{ev}".encode() for ev in (4, 5, 6, 7)]
    assert await chat_store.logs_after({}, 4) == {}


async def archive_cpu(node: Node) -> dict[str, float]:
    """huddle_chat_archive_cpu_seconds_total of the node's /metrics, by thread."""
    samples = await node_samples(node.url, "huddle_chat_archive_cpu_seconds_total")
    return {s.labels["thread"]: s.value for s in samples}


@pytest.mark.parametrize("kind", ("sqlite", "postgres"))
async def test_the_node_says_what_archiving_costs_it(
    kind: str, start_node: StartNode, redis_client: redis.Redis, request: pytest.FixtureRequest
) -> None:
    """/metrics counts the archiver's CPU: its task's own steps on the event loop's thread
    (not the requests handled there meanwhile), and SQLite's threads (PostgreSQL runs none
    in the node)."""
    settings: dict[str, Any] = {}
    if kind == "postgres":
        server: Postgres = request.getfixturevalue("postgres")
        settings["database_url"] = server.create_database()
    node = await start_node(chat_send_per_s=1000, rate_per_s=1000, rate_burst=1000, **settings)
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    store = node.app[HISTORY]
    group = (await alice.create("group", "g", ["bob"])).conv
    await caught_up(redis_side, store, [group])
    before = await archive_cpu(node)
    assert set(before) == ({"loop", "store"} if kind == "sqlite" else {"loop"})
    thread_before = time.thread_time()  # the node runs on this thread, as do its clients
    after = before
    # Rounds until SQLite's threads have moved (the kernel counts a thread's CPU in ticks).
    for round_ in range(20):
        for i in range(100):
            await (alice if i % 2 else bob).send(group, f"round {round_}, message {i}: café")
        await caught_up(redis_side, store, [group])
        after = await archive_cpu(node)
        if kind == "postgres" or after["store"] > before["store"]:
            break
    on_thread = time.thread_time() - thread_before
    archived = after["loop"] - before["loop"]
    assert archived > 0
    # A part of what this thread did (sending, delivering, archiving), not all of it.
    assert archived < on_thread / 2
    if kind == "sqlite":
        assert after["store"] > before["store"]

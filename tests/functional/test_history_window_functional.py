"""Redis keeps a bounded hot window of each conversation once the history store has it:
pages, jumps, threads, earlier versions and searches answer across the boundary exactly as
they did before the window moved; writes to messages below it work; a device whose cursor
is older than the window gets an explicit gap and pages from the store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as redis

from chat import wire as w
from chat.history import archiver as archiver_module
from chat.history.sql import SqlHistory
from chat.store import ChatStore
from chat.text import query_terms
from huddle.app import ARCHIVER, HISTORY
from huddle.chat import ChatClient
from signaling.keys import conv_key
from signaling.wire import Ok
from tests.conftest import StartNode
from tests.functional.test_history_archive_functional import chat, chatter
from tests.helpers import Node

WINDOW = 10
SETTLED_S = 20.0
FAST = {"chat_send_per_s": 1000, "rate_per_s": 1000.0, "rate_burst": 1000}
PAGES: list[dict[str, Any]] = [
    {},
    {"limit": 7},
    {"limit": 100},
    {"before": 12, "limit": 5},
    {"before": 60, "limit": 20},
    {"after": 0, "limit": 30},
    {"after": 25, "limit": 30},
    *({"around": s, "limit": 9} for s in (1, 3, 5, 20, 31, 50, 70, 79)),
]
QUERIES = ("café", "明天", "twice", "launch", "edited", "note 5", "车站", "note 2", "more 7")


async def fill(alice: ChatClient, bob: ChatClient) -> list[str]:
    convs = await chatter(alice, bob)
    for i in range(40):
        await (bob if i % 2 else alice).send(convs[0], f"more words {i}")
    reply_root = (await alice.send(convs[0], "a late thread")).seq
    await bob.send(convs[0], "late reply", reply_to=reply_root)
    await bob.read(convs[0], 60)
    return convs


async def answers(reader: ChatClient, convs: list[str], last: dict[str, int]) -> list[Any]:
    """Every read a device can make of the conversations, in order."""
    out: list[Any] = []
    for conv in convs:
        for params in PAGES:
            out.append(await reader.history(conv, **params))
        for seq in range(1, last[conv] + 1):
            out.append(await reader.request(w.ChatEdits(id="", conv=conv, seq=seq)))
        for root in {m.reply_to for m in await reader.history(conv, limit=100) if m.reply_to}:
            for after in (0, 2, 40):
                out.append(
                    await reader.request(w.ChatThread(id="", conv=conv, root=root, after=after))
                )
    for query in QUERIES:
        out.append(await reader.request(w.ChatSearch(id="", query=query, limit=50)))
    for item in out:
        if hasattr(item, "re"):
            item.re = ""
    return out


async def settled(node: Node, convs: list[str], redis_side: ChatStore) -> None:
    """The store has every event, and the window is trimmed to its size."""
    store = node.app[HISTORY]
    async with asyncio.timeout(SETTLED_S):
        for conv in convs:
            while True:
                meta = await redis_side.meta(conv)
                head = await store.head(conv)
                assert meta is not None
                archived = head is not None and head.ev >= meta.last_ev
                if archived and meta.cold_seq >= meta.last_seq - WINDOW:
                    break
                await asyncio.sleep(0.05)


async def test_reads_cross_the_window_as_before(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    unbounded = await start_node(chat_window_events=1_000_000, **FAST)
    alice, bob = await chat(unbounded, "alice"), await chat(unbounded, "bob")
    convs = await fill(alice, bob)
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    last = {c: (await redis_side.meta(c)).last_seq for c in convs}  # type: ignore[union-attr]
    before = await answers(bob, convs, last)
    assert (await redis_side.meta(convs[0])).cold_seq == 0  # type: ignore[union-attr]
    old_cursors = dict(bob.cursors)
    await unbounded.runner.cleanup()

    windowed = await start_node(chat_window_events=WINDOW, **FAST)
    await settled(windowed, convs, redis_side)
    group = convs[0]
    meta = await redis_side.meta(group)
    assert meta is not None and meta.cold_seq == meta.last_seq - WINDOW
    # Redis holds the window only: messages, their client ids, the log.
    assert await redis_client.hlen(conv_key(group, "msgs")) == WINDOW
    assert await redis_client.hlen(conv_key(group, "cids")) <= WINDOW
    assert await redis_client.xlen(conv_key(group, "events")) <= WINDOW
    assert not await redis_client.exists(conv_key(group, "edits:3"))

    reader = await chat(windowed, "bob")
    assert await answers(reader, convs, last) == before

    # A device whose cursor is older than the window: an explicit gap, then pages.
    stale = ChatClient(await windowed.client("bob"))
    stale.cursors = {c: 5 for c in old_cursors}
    reply = await stale.sync()
    assert group in reply.gaps
    page = await stale.history(group, before=3, limit=2)
    assert [m.seq for m in page] == [1, 2]


async def test_writes_to_messages_below_the_window(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    node = await start_node(chat_window_events=WINDOW, **FAST)
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    convs = await fill(alice, bob)
    group = convs[0]
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    await settled(node, convs, redis_side)
    root = 32  # "thread root: the launch", below the window
    meta = await redis_side.meta(group)
    assert meta is not None and meta.cold_seq > root

    await alice.request(w.ChatEdit(id="", conv=group, seq=6, text="edited below the window"))
    await bob.request(w.ChatReact(id="", conv=group, seq=6, emoji="🔥"))
    await bob.send(group, "a reply long after", reply_to=root)
    await alice.request(w.ChatRecall(id="", conv=group, seq=7))
    reply = await bob.request(w.ChatReport(id="", conv=group, seq=8, reason="spam"))
    assert isinstance(reply, Ok)
    for _ in range(WINDOW):
        await alice.send(group, "push the window on")
    await settled(node, convs, redis_side)
    # The copies made for the writes left Redis again once the store had the writes.
    async with asyncio.timeout(SETTLED_S):
        while await redis_client.scard(conv_key(group, "warm")):
            await node.app[ARCHIVER].trim(group, await node.app[HISTORY].head(group))  # type: ignore[arg-type]
            await asyncio.sleep(0.05)
    assert not await redis_client.hexists(conv_key(group, "msgs"), "6")

    [six, seven] = await bob.history(group, around=7, limit=2)
    assert six.text == "edited below the window" and six.edited
    assert six.reactions == {"🔥": ["bob"]}
    assert seven.recalled and seven.text is None
    versions = await bob.request(w.ChatEdits(id="", conv=group, seq=6))
    assert [v.text for v in versions.versions] == ["note 4 about the café 明天开会 #4"]
    thread = await bob.request(w.ChatThread(id="", conv=group, root=root))
    assert [m.text for m in thread.messages][-1] == "a reply long after"
    assert len(thread.messages) == 5
    [root_msg] = await bob.history(group, around=root, limit=1)
    assert root_msg.thread is not None and root_msg.thread.count == 5
    hits = await bob.request(w.ChatSearch(id="", query="below the window", limit=5))
    assert [h.message.seq for h in hits.hits] == [6]
    # Recalled ("note 5", seq 7): gone from the store's search entries, not only the hits.
    store: SqlHistory = node.app[HISTORY]  # type: ignore[assignment]
    assert 7 not in await store.found_by(group, query_terms("note 5"))
    assert await store.found_by(group, query_terms("note 6")) == [8]
    hits = await bob.request(w.ChatSearch(id="", query="note 5", limit=5))
    assert [h.message.seq for h in hits.hits] == []


async def test_search_reads_the_store_and_redis_keeps_no_terms(
    start_node: StartNode, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Terms an earlier version kept in Redis are deleted when a node starts.
    await redis_client.zadd(conv_key("g-old", "ix:quarterly"), {"3": 3})
    # The node's own archiving waits far longer than the test: the search catches up itself.
    monkeypatch.setattr(archiver_module, "ARCHIVE_DELAY_S", 3600.0)
    node = await start_node(**FAST)
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    conv = (await alice.create("group", "g", ["bob"])).conv
    sent = await alice.send(conv, "quarterly figures 季度报告")
    hits = await bob.request(w.ChatSearch(id="", query="季度", limit=5))
    assert [h.message.seq for h in hits.hits] == [sent.seq]
    await alice.request(w.ChatEdit(id="", conv=conv, seq=sent.seq, text="annual figures"))
    assert (await bob.request(w.ChatSearch(id="", query="quarterly", limit=5))).hits == []
    assert len((await bob.request(w.ChatSearch(id="", query="annual", limit=5))).hits) == 1
    assert await redis_client.keys("huddle:{conv:*}:ix:*") == []


async def test_a_window_by_days_lets_an_idle_conversation_go(
    start_node: StartNode, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(archiver_module, "TRIM_SWEEP_S", 0.2)
    node = await start_node(chat_window_days=1 / 86_400, **FAST)  # one second
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    conv = (await alice.create("group", "g", ["bob"])).conv
    for i in range(5):
        await alice.send(conv, f"old news {i}")
    before = await bob.history(conv)
    redis_side = ChatStore(redis_client, 20_000, 5_000)
    async with asyncio.timeout(SETTLED_S):
        while (await redis_side.meta(conv)).cold_seq < 6:  # type: ignore[union-attr]  # noqa: ASYNC110
            await asyncio.sleep(0.1)
    # Far fewer than chat_window_events, but older than the window: all in the store only.
    assert await redis_client.hlen(conv_key(conv, "msgs")) == 0
    assert await redis_client.xlen(conv_key(conv, "events")) == 0
    assert await bob.history(conv) == before
    # The conversation goes on; a device at the head replays what follows, with no gap.
    await alice.send(conv, "fresh news")
    reply = await bob.sync()
    assert reply.gaps == []
    assert [m.text for m in await bob.history(conv, limit=2)] == ["old news 4", "fresh news"]


async def test_a_store_that_missed_what_redis_let_go_is_reported(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    """Two nodes on one Redis, each with a SQLite file of its own (a deployment that needs
    PostgreSQL): what the first let go, the second's store can never get; it says so."""
    first = await start_node(chat_window_events=WINDOW, **FAST)
    alice = await chat(first, "alice")
    conv = (await alice.create("group", "g", [])).conv
    for i in range(3 * WINDOW):
        await alice.send(conv, f"line {i}")
    await settled(first, [conv], ChatStore(redis_client, 20_000, 5_000))
    second = await start_node(chat_window_events=WINDOW, **FAST)
    async with asyncio.timeout(SETTLED_S):
        while conv not in second.app[ARCHIVER].stuck:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert "no longer in Redis" in second.app[ARCHIVER].stuck[conv]
    assert await second.app[HISTORY].head(conv) is None

"""The search index is written behind the log (chat.indexer), never by the send: a search
still finds every message, edits before indexing leave no old terms, and a pass that read
messages edited meanwhile starts over."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as redis

from chat import indexer
from chat import wire as w
from chat.store import ChatStore, IndexSpan
from huddle.chat import ChatClient
from signaling.keys import conv_key
from tests.conftest import StartNode
from tests.functional.test_chat_search_functional import chat, search, texts

# Long enough that the node's own pass cannot run between a reply and the next check.
SLOW_INDEX_S = 3.0


async def index_keys(client: redis.Redis, conv: str) -> list[bytes | str]:
    return list(await client.keys(conv_key(conv, "ix:*")))


async def indexed_to(client: redis.Redis, conv: str) -> tuple[int, int]:
    ix, last = await client.hmget(conv_key(conv, "meta"), ["ix_seq", "last_seq"])
    return int(ix or 0), int(last or 0)


async def caught_up(client: redis.Redis, conv: str, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        # The cursor is in Redis: polling it needs no hook into the node.
        while (ix := await indexed_to(client, conv))[0] < ix[1]:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def edit(c: ChatClient, conv: str, seq: int, text: str) -> None:
    await c.request(w.ChatEdit(id="", conv=conv, seq=seq, text=text))


async def test_the_send_writes_no_terms_and_the_node_indexes_after(
    start_node: StartNode, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer, "INDEX_DELAY_S", SLOW_INDEX_S)
    node = await start_node(chat_send_per_s=1000)
    alice = await chat(node, "alice")
    conv = (await alice.create("group", "g", [])).conv
    sent = await alice.send(conv, "quarterly figures")
    assert await index_keys(redis_client, conv) == []
    assert (await indexed_to(redis_client, conv))[0] == 0

    # No search needed: the node indexes what it stored, in the background.
    await caught_up(redis_client, conv, timeout=SLOW_INDEX_S + 10)
    assert await redis_client.zscore(conv_key(conv, "ix:quarterly"), sent.seq) == sent.seq
    assert texts(await search(alice, "quarterly")) == ["quarterly figures"]


async def test_search_indexes_what_is_not_indexed_yet(
    start_node: StartNode, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer, "INDEX_DELAY_S", SLOW_INDEX_S)
    monkeypatch.setattr(indexer, "INDEX_BATCH", 3)  # several script calls to catch up
    one, two = await start_node(chat_send_per_s=1000), await start_node(chat_send_per_s=1000)
    alice, bob = await chat(one, "alice"), await chat(two, "bob")
    conv = (await alice.create("group", "g", ["bob"])).conv
    for i in range(8):
        await alice.send(conv, f"note {i} about the harbour")
    found = await search(bob, "harbour", limit=50)
    assert texts(found) == [f"note {i} about the harbour" for i in reversed(range(8))]
    assert await indexed_to(redis_client, conv) == (9, 9)
    await asyncio.sleep(SLOW_INDEX_S + 0.5)  # the node's own pass finds nothing left to do
    assert await indexed_to(redis_client, conv) == (9, 9)


async def test_edits_and_recalls_before_indexing_leave_no_old_terms(
    start_node: StartNode, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer, "INDEX_DELAY_S", SLOW_INDEX_S)
    node = await start_node(chat_send_per_s=1000)
    alice = await chat(node, "alice")
    conv = (await alice.create("group", "g", [])).conv
    first = await alice.send(conv, "apple pie")
    second = await alice.send(conv, "cherry tart")
    await edit(alice, conv, first.seq, "banana bread")
    await alice.request(w.ChatRecall(id="", conv=conv, seq=second.seq))

    assert texts(await search(alice, "banana")) == ["banana bread"]
    assert await search(alice, "apple") == []
    assert await search(alice, "cherry") == []
    for term in ("apple", "cherry"):
        assert await redis_client.exists(conv_key(conv, f"ix:{term}")) == 0, term

    # Once indexed, an edit moves the message's terms itself.
    await edit(alice, conv, first.seq, "plum jam")
    assert await search(alice, "banana") == []
    assert texts(await search(alice, "plum")) == ["plum jam"]
    assert await redis_client.zscore(conv_key(conv, "ix:banana"), first.seq) is None


async def test_a_pass_that_read_an_edited_message_starts_over(
    start_node: StartNode, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer, "INDEX_DELAY_S", SLOW_INDEX_S)
    node = await start_node(chat_send_per_s=1000)
    alice = await chat(node, "alice")
    conv = (await alice.create("group", "g", [])).conv
    sent = await alice.send(conv, "apple pie")
    store = ChatStore(redis_client, 100, 100)
    [head] = await store.index_heads([conv])
    assert head is not None and head.ix_seq == 0 and head.last_seq == sent.seq

    # The pass read "apple pie"; the edit lands before the pass writes its terms.
    await edit(alice, conv, sent.seq, "banana bread")
    span = IndexSpan(conv, head, sent.seq)
    assert await store.raw_messages([span]) != [[None]]
    assert await store.index([span], [{"apple": [sent.seq]}]) == [False]
    assert await redis_client.exists(conv_key(conv, "ix:apple")) == 0
    assert await indexed_to(redis_client, conv) == (0, sent.seq)

    await indexer.catch_up(store, [conv])
    assert await indexed_to(redis_client, conv) == (sent.seq, sent.seq)
    assert await redis_client.zscore(conv_key(conv, "ix:banana"), sent.seq) == sent.seq
    assert await redis_client.exists(conv_key(conv, "ix:apple")) == 0


async def test_a_conversation_indexed_by_the_old_send_is_indexed_again_whole(
    start_node: StartNode, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(indexer, "INDEX_DELAY_S", SLOW_INDEX_S)
    node = await start_node(chat_send_per_s=1000)
    alice = await chat(node, "alice")
    conv = (await alice.create("group", "g", [])).conv
    await alice.send(conv, "older words")
    await search(alice, "older")  # indexed
    # As a conversation from before: terms in the index, no cursor.
    await redis_client.hdel(conv_key(conv, "meta"), "ix_seq")
    await alice.send(conv, "newer words")
    assert texts(await search(alice, "words")) == ["newer words", "older words"]

"""The send script (chat/lua/send.lua) against real Redis, below the protocol: what one send
writes, and that a send which fails half way leaves nothing of itself."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
from redis.exceptions import ResponseError

from chat import wire as w
from chat.store import ENCODER, ChatError, ChatStore, direct_id
from signaling.keys import conv_key
from signaling.redis_client import RedisClient

pytestmark = pytest.mark.redis_cluster


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _message(client_id: str, text: str) -> w.ChatMessage:
    return w.ChatMessage(
        seq=-2,
        ts=int(time.time() * 1000),
        sender="alice",
        kind="text",
        client_id=client_id,
        text=text,
    )


async def _direct(store: ChatStore) -> str:
    conv = direct_id("alice", "bob")
    await store.ensure_direct(conv, "alice", "bob", 1)
    return conv


async def _events(client: RedisClient, conv: str) -> list[tuple[bytes, bytes]]:
    raw: Any = await client.xrange(conv_key(conv, "events"), "-", "+")
    return [(i, fields[b"e"]) for i, fields in raw]


async def test_a_send_writes_the_message_its_event_and_the_counters(
    redis_client: RedisClient,
) -> None:
    store = ChatStore(redis_client, 100, 100)
    conv = await _direct(store)
    first = _message("c1", 'quote " and \\ and ünïcode')
    assert await store.send(conv, first) == ("ok", 1, 1)
    second = _message("c2", "two")
    assert await store.send(conv, second) == ("ok", 2, 2)

    meta = await redis_client.hgetall(conv_key(conv, "meta"))
    assert (meta[b"last_seq"], meta[b"last_ev"]) == (b"2", b"2")
    assert meta[b"last_ts"] == str(second.ts).encode()
    stored = await redis_client.hget(conv_key(conv, "msgs"), "2")
    assert stored == meta[b"last"] == ENCODER.encode(msgspec.structs.replace(second, seq=2))
    assert await redis_client.hget(conv_key(conv, "cids"), "alice\nc1") == b"1"
    assert await redis_client.hget(conv_key(conv, "reads"), "alice") == b"2"

    events = await _events(redis_client, conv)
    assert [i for i, _ in events] == [b"1-1", b"2-1"]
    epoch = _text(meta[b"epoch"])
    for n, (msg, (_, raw)) in enumerate(zip((first, second), events, strict=True), start=1):
        event = msgspec.json.decode(raw, type=w.ChatMessageEvent)
        assert (event.ev, event.epoch, event.message.seq) == (n, epoch, n)
        # Byte for byte what the node encodes for the event, and the message as stored.
        message = msgspec.structs.replace(msg, seq=n)
        template = w.ChatMessageEvent(seq=0, conv=conv, ev=-1, message=message)
        assert raw == ENCODER.encode(
            msgspec.structs.replace(template, ev=n, epoch=epoch, stamp=event.stamp)
        )
    stamps = [msgspec.json.decode(raw, type=w.ChatMessageEvent).stamp for _, raw in events]
    assert len(set(stamps)) == 2 and all(stamps)

    # The same client id again: stored once, the first seq replied, nothing logged.
    assert await store.send(conv, _message("c1", "again")) == ("duplicate", 1, 0)
    assert len(await _events(redis_client, conv)) == 2
    assert await redis_client.hget(conv_key(conv, "meta"), "last_seq") == b"2"


async def test_a_send_into_a_log_without_an_epoch_makes_one(redis_client: RedisClient) -> None:
    store = ChatStore(redis_client, 100, 100)
    conv = await _direct(store)
    await store.send(conv, _message("c1", "one"))
    await redis_client.hdel(conv_key(conv, "meta"), "epoch")
    await store.send(conv, _message("c2", "two"))
    epoch = await redis_client.hget(conv_key(conv, "meta"), "epoch")
    assert epoch
    raw = (await _events(redis_client, conv))[-1][1]
    assert msgspec.json.decode(raw, type=w.ChatMessageEvent).epoch == _text(epoch)


async def test_a_send_whose_event_cannot_be_logged_leaves_nothing(
    redis_client: RedisClient,
) -> None:
    store = ChatStore(redis_client, 100, 100)
    conv = await _direct(store)
    await store.send(conv, _message("c1", "one"))
    events = conv_key(conv, "events")
    # A stream ahead of its counter (not made by Huddle): the next event's number is taken.
    await redis_client.xadd(events, {"e": "{}"}, id="9-1")
    with pytest.raises(ResponseError):
        await store.send(conv, _message("c2", "two"))
    meta = await redis_client.hgetall(conv_key(conv, "meta"))
    assert (meta[b"last_seq"], meta[b"last_ev"]) == (b"1", b"1")
    assert await redis_client.hkeys(conv_key(conv, "msgs")) == [b"1"]
    assert await redis_client.hget(conv_key(conv, "cids"), "alice\nc2") is None
    assert await redis_client.hget(conv_key(conv, "reads"), "alice") == b"1"

    # Set right: the same client id is stored then, under the next number.
    await redis_client.delete(events)
    assert await store.send(conv, _message("c2", "two")) == ("ok", 2, 2)
    assert [i for i, _ in await _events(redis_client, conv)] == [b"2-1"]


def _from(sender: str, client_id: str) -> w.ChatMessage:
    return msgspec.structs.replace(_message(client_id, "hello"), sender=sender)


async def _meta_field(client: RedisClient, conv: str, field: str) -> Any:
    return await client.hget(conv_key(conv, "meta"), field)


async def test_a_direct_conversation_counts_its_blockers_beside_the_copy(
    redis_client: RedisClient,
) -> None:
    """The send reads the count in meta, not the set: every write to the copy keeps it, and
    a copy without one (older data) is counted at its next send."""
    store = ChatStore(redis_client, 100, 100)
    conv = await _direct(store)
    # A block written before the copy is made (the conversation not sent in yet).
    await store.set_direct_block("bob", "alice", True)
    assert await _meta_field(redis_client, conv, "blockers") is None
    with pytest.raises(ChatError) as refused:
        await store.send(conv, _from("alice", "c1"))
    assert refused.value.code == "blocked"
    assert await _meta_field(redis_client, conv, "blockers") == b"1"
    # The blocked user is refused, the blocker is not.
    assert (await store.send(conv, _from("bob", "c2")))[0] == "ok"
    await store.set_direct_block("alice", "bob", True)
    assert await _meta_field(redis_client, conv, "blockers") == b"2"
    with pytest.raises(ChatError):
        await store.send(conv, _from("bob", "c3"))
    await store.set_direct_block("bob", "alice", False)
    await store.set_direct_block("alice", "bob", False)
    assert await _meta_field(redis_client, conv, "blockers") == b"0"
    assert (await store.send(conv, _from("alice", "c4")))[0] == "ok"

    # Older data: a copy without its count, holding a block.
    await redis_client.sadd(conv_key(conv, "blocks"), "bob")
    await redis_client.hdel(conv_key(conv, "meta"), "blockers")
    with pytest.raises(ChatError):
        await store.send(conv, _from("alice", "c5"))
    assert await _meta_field(redis_client, conv, "blockers") == b"1"
    assert (await store.send(conv, _from("bob", "c6")))[0] == "ok"


async def test_a_group_counts_its_silenced_members(redis_client: RedisClient) -> None:
    """Meta's "silenced" follows the silenced hash through silence, its end and a removal;
    a group without it (older data) is counted at its next send, its silences kept."""
    store = ChatStore(redis_client, 100, 100)
    conv = "g1"
    await store.create(conv, "group", "g", "alice", ["bob", "carol"], 1)
    assert await _meta_field(redis_client, conv, "silenced") == b"0"
    until = str(int(time.time() * 1000) + 60_000)

    async def silence(user: str, until: str) -> None:
        await store.change_members(conv, "silence", "alice", 2, [user, until], None, 100)

    await silence("bob", until)
    await silence("carol", until)
    assert await _meta_field(redis_client, conv, "silenced") == b"2"
    for sender in ("bob", "carol"):
        with pytest.raises(ChatError) as refused:
            await store.send(conv, _from(sender, "s1"))
        assert refused.value.code == "silenced"
    await silence("bob", "0")
    assert await _meta_field(redis_client, conv, "silenced") == b"1"
    assert (await store.send(conv, _from("bob", "s2")))[0] == "ok"
    await store.change_members(conv, "remove", "alice", 3, ["carol"], None, 100)
    assert await _meta_field(redis_client, conv, "silenced") == b"0"

    # Older data: silences without a count.
    await store.change_members(conv, "add", "alice", 4, ["carol"], None, 100)
    await silence("carol", until)
    await redis_client.hdel(conv_key(conv, "meta"), "silenced")
    with pytest.raises(ChatError) as refused:
        await store.send(conv, _from("carol", "s3"))
    assert refused.value.code == "silenced"
    assert await _meta_field(redis_client, conv, "silenced") == b"1"
    assert (await store.send(conv, _from("alice", "s4")))[0] == "ok"


async def test_a_direct_conversation_s_members_are_its_peers(redis_client: RedisClient) -> None:
    """Membership of a direct conversation is read from its peers in meta, and from members
    where meta lacks them (older data); nobody else sends there, whatever their name."""
    store = ChatStore(redis_client, 100, 100)
    conv = await _direct(store)
    await store.make_direct_blocks(conv)
    for lacking in (False, True):
        if lacking:
            await redis_client.hdel(conv_key(conv, "meta"), "peers")
        for n, sender in enumerate(("alice", "bob")):
            assert (await store.send(conv, _from(sender, f"{lacking}{n}")))[0] == "ok"
        for outsider in ("eve", "ali", "lice", "bo", "alice\nbob", ""):
            with pytest.raises(ChatError) as refused:
                await store.send(conv, _from(outsider, f"{lacking}{outsider}"))
            assert refused.value.code == "not_member"
    # A conversation that does not exist reads as one the sender is not in (refusal()).
    with pytest.raises(ChatError) as refused:
        await store.send(direct_id("alice", "carol"), _from("alice", "x"))
    assert refused.value.code == "not_member"
    assert not await redis_client.exists(conv_key(direct_id("alice", "carol"), "events"))

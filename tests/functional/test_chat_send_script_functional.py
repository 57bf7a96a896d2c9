"""The send script (chat/lua/send.lua) against real Redis, below the protocol: what one send
writes, and that a send which fails half way leaves nothing of itself."""

from __future__ import annotations

import time
from typing import Any

import msgspec
import pytest
from redis.exceptions import ResponseError

from chat import wire as w
from chat.store import ENCODER, ChatStore, direct_id
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

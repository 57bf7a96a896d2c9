"""Node processes killed (SIGKILL) while they send and archive, several times: the history
store (SQLite in the node's data folder, written by each node in turn) ends with every
acknowledged message once, in order, and equal to what Redis holds."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path

import pytest
import redis.asyncio as redis

from chat import wire as w
from chat.history.config import SQLITE_NAME
from chat.history.sqlite import SQLiteHistory
from chat.store import ChatStore
from huddle.chat import ChatClient
from huddle.client import HuddleClient
from tests.helpers import NodeProcess, make_token

KILLS = 4
CAUGHT_UP_S = 30.0
ENV = {"HUDDLE_CHAT_SEND_PER_S": "100000", "HUDDLE_LOG_LEVEL": "warning"}


async def chat(node: NodeProcess, identity: str) -> ChatClient:
    client = HuddleClient(node.url, make_token(identity))
    await client.connect()
    await client.hello()
    out = ChatClient(client)
    await out.sync()
    return out


async def send_until_killed(
    sender: ChatClient,
    conv: str,
    tag: str,
    acked: dict[int, str],
    stop: asyncio.Event,
    unacked: dict[int, str],
) -> None:
    """Send (with an edit or a reaction now and then) until the node goes away; what was
    acknowledged goes into ``acked`` (seq -> text), an edit sent but not acknowledged into
    ``unacked``: the node may have stored it before it was killed."""
    n = 0
    with contextlib.suppress(Exception):
        while not stop.is_set():
            text = f"{tag} message {n} 测试"
            reply = await sender.send(conv, text)
            acked[reply.seq] = text
            if n % 7 == 3:
                await sender.request(w.ChatReact(id="", conv=conv, seq=reply.seq, emoji="👍"))
            if n % 11 == 5:
                edited = f"{tag} edited {n}"
                unacked[reply.seq] = edited
                await sender.request(w.ChatEdit(id="", conv=conv, seq=reply.seq, text=edited))
                acked[reply.seq] = edited
                del unacked[reply.seq]
            n += 1


@pytest.mark.slow
async def test_killed_nodes_leave_every_acknowledged_message_in_the_store(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    rng = random.Random(15)
    data = tmp_path / "node"
    acked: dict[str, dict[int, str]] = {}
    unacked: dict[str, dict[int, str]] = {}
    convs: list[str] = []
    for round_ in range(KILLS + 1):
        node = NodeProcess(data, redis_url=redis_url, env=ENV)
        try:
            await node.wait_healthy()
            alice, bob = await chat(node, "alice"), await chat(node, "bob")
            if not convs:
                convs.append((await alice.create("group", "g", ["bob"])).conv)
                convs.append((await alice.send(to="bob", text="hello")).conv)
                acked[convs[0]], acked[convs[1]] = {}, {1: "hello"}
            if round_ == KILLS:
                break  # the last node only catches up
            stop = asyncio.Event()
            senders = [
                asyncio.create_task(
                    send_until_killed(
                        who, conv, f"{tag}{round_}", acked[conv], stop, unacked.setdefault(conv, {})
                    )
                )
                for who, conv, tag in (
                    (alice, convs[0], "a"),
                    (bob, convs[0], "b"),
                    (bob, convs[1], "d"),
                )
            ]
            await asyncio.sleep(rng.uniform(0.3, 1.2))
            node.kill()
            stop.set()
            await asyncio.gather(*senders)
            for client in (alice, bob):
                with contextlib.suppress(Exception):
                    await client.client.close()
        except BaseException:
            node.close()
            raise
        node.close()

    redis_side = ChatStore(redis_client, 20_000, 5_000)
    reader = await SQLiteHistory.open(data / SQLITE_NAME)
    try:
        async with asyncio.timeout(CAUGHT_UP_S):
            for conv in convs:
                last_ev = await redis_side.conv_head(conv)
                while ((await reader.head(conv)) or (0,))[0] < last_ev:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        for client in (alice, bob):
            await client.client.close()
        node.terminate()
        for conv in convs:
            meta = await redis_side.meta(conv)
            assert meta is not None
            head = await reader.head(conv)
            assert head is not None and (head.ev, head.last_seq) == (meta.last_ev, meta.last_seq)
            seqs = list(range(1, meta.last_seq + 1))
            stored = await reader.messages(conv, seqs)
            assert [m.seq for m in stored] == seqs
            assert stored == await redis_side.messages(conv, seqs)
            for seq in seqs:
                assert await reader.edits(conv, seq) == await redis_side.edits(conv, seq)
            texts = {m.seq: m.text for m in stored}
            assert all(
                texts[seq] in (text, unacked.get(conv, {}).get(seq))
                for seq, text in acked[conv].items()
            )
            assert len(acked[conv]) > 20, "the nodes were killed before sending much"
    finally:
        node.close()
        await reader.close()

"""Frames to one connection queued together go to its socket in one write, whole and in
order; connections that compress (permessage-deflate) are written frame by frame."""

from __future__ import annotations

import socket
from pathlib import Path

import aiohttp
import msgspec
import pytest

from chat import wire as w
from huddle.chat import ChatClient
from huddle.client import HuddleClient
from signaling import protocol as p
from signaling.server import HUB
from signaling.session import WRITE_BUFFER_HIGH
from tests.conftest import StartNode
from tests.helpers import Node, NodeProcess, make_token

# Lengths around the frame header's size classes (7-bit, 16-bit) once in an event.
TEXTS = ["x", "y" * 60, "z" * 200, "w" * 3000, "v" * 70]


async def start(start_node: StartNode) -> Node:
    return await start_node(chat_send_per_s=10_000, rate_per_s=10_000, rate_burst=10_000)


async def test_a_replay_goes_out_in_a_few_writes_whole_and_in_order(
    start_node: StartNode,
) -> None:
    node = await start(start_node)
    alice = ChatClient(await node.client("alice"))
    await alice.sync()
    sent = [await alice.send(to="bob", text=TEXTS[i % len(TEXTS)] + str(i)) for i in range(60)]
    metrics = node.app[HUB].metrics
    writes, events = metrics.writes, metrics.sent["event"]
    bob = ChatClient(await node.client("bob"), cursors={sent[0].conv: 0})
    await bob.sync()  # replays the 60 messages from the start
    got = [e.message for e in bob.log if isinstance(e, w.ChatMessageEvent)]
    assert [(m.seq, m.text) for m in got] == [
        (s.seq, TEXTS[i % len(TEXTS)] + str(i)) for i, s in enumerate(sent)
    ]
    frames = metrics.sent["event"] - events
    assert frames >= 60
    # The replay's events, queued in one go with the sync's reply: a write per frame would
    # be over 60.
    assert metrics.writes - writes <= 10


@pytest.mark.single_redis(
    "on one Redis the chat send's reply and its echo reach the node together; on the test "
    "cluster none of them shared a write (measured: a write per frame)"
)
async def test_a_reply_and_the_echo_made_together_share_a_write(start_node: StartNode) -> None:
    node = await start(start_node)
    alice, bob = ChatClient(await node.client("alice")), ChatClient(await node.client("bob"))
    await alice.sync()
    await bob.sync()
    first = await alice.send(to="bob", text="hi")
    await alice.client.next_event("chat.message")
    await bob.client.next_event("chat.message")
    metrics = node.app[HUB].metrics
    writes, frames = metrics.writes, sum(metrics.sent.values())
    for i in range(40):
        ok = await alice.send(first.conv, f"m{i}")
        echo = await alice.client.next_event("chat.message")
        delivered = await bob.client.next_event("chat.message")
        assert echo.message.seq == delivered.message.seq == ok.seq
    made = sum(metrics.sent.values()) - frames
    assert made == 120  # per message: the reply, the echo, the delivery
    # Each frame alone would be 120 writes; the reply and the echo come out of Redis
    # together and mostly leave together.
    assert metrics.writes - writes < 110


async def test_a_compressing_connection_gets_every_frame_in_order(node: Node) -> None:
    async with aiohttp.ClientSession() as http:
        ws = await node.raw_ws(http, compress=15)
        assert ws.compress == 15
        hello = p.Hello(id="h", token=make_token("alice"))
        await ws.send_str(p.encode(hello).decode())
        for i in range(30):
            await ws.send_str(p.encode(p.Ping(id=f"p{i}")).decode())
        replies = [msgspec.json.decode(await ws.receive_str(timeout=5)) for _ in range(31)]
        assert [r["re"] for r in replies] == ["h"] + [f"p{i}" for i in range(30)]
        assert replies[0]["identity"] == "alice" and "server_time_ms" in replies[1]
        await ws.close()


def _counter(metrics: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(name)
    )


@pytest.mark.single_redis(
    "on one Redis the chat send's reply and its echo reach the node together; on the test "
    "cluster none of them shared a write (measured: a write per frame)"
)
async def test_a_node_process_writes_frames_together_too(redis_url: str, tmp_path: Path) -> None:
    """``huddle serve`` runs on uvloop, whose sockets are not asyncio's own classes."""
    node = NodeProcess(tmp_path, redis_url=redis_url, env={"HUDDLE_CHAT_SEND_PER_S": "10000"})
    try:
        await node.wait_healthy()
        alice = HuddleClient(node.url, make_token("alice"))
        bob = HuddleClient(node.url, make_token("bob"))
        for c in (alice, bob):
            await c.connect()
            await c.hello()
        chats = [ChatClient(alice), ChatClient(bob)]
        for chat in chats:
            await chat.sync()
        first = await chats[0].send(to="bob", text="hi")
        for i in range(30):
            await chats[0].send(first.conv, f"m{i}")
            await alice.next_event("chat.message")
            await bob.next_event("chat.message")
        async with aiohttp.ClientSession() as http, http.get(f"{node.url}/metrics") as resp:
            metrics = await resp.text()
        frames = _counter(metrics, "huddle_ws_messages_out_total")
        assert frames >= 90
        assert _counter(metrics, "huddle_ws_writes_total") < frames - 10
        for c in (alice, bob):
            await c.close()
    finally:
        node.close()


async def test_frames_held_back_by_a_full_socket_go_out_whole_and_in_order(
    start_node: StartNode,
) -> None:
    """A device that stops reading: its socket fills, and the frames queued after that go
    through aiohttp's writer as messages without the header they were queued with; all of
    them arrive whole and in order once it reads again."""
    node = await start(start_node)
    alice = ChatClient(await node.client("alice"))
    await alice.sync()
    conv = (await alice.send(to="bob", text="hi")).conv
    texts = [f"{i} " + "é" * 2000 for i in range(160)]  # 4 KB each, 640 KB in all
    async with aiohttp.ClientSession() as http:
        ws = await node.raw_ws(http)
        await ws.send_str(p.encode(p.Hello(id="h", token=make_token("bob"))).decode())
        hello = msgspec.json.decode(await ws.receive_str(timeout=5))
        session = next(s for s in node.app[HUB].sessions if s.id == hello["session"])
        await ws.send_str(p.encode(w.ChatSync(id="s")).decode())
        while msgspec.json.decode(await ws.receive_str(timeout=5)).get("re") != "s":
            pass
        # Small socket buffers on both sides: the node's write buffer fills within a few
        # messages instead of after megabytes.
        ws.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        session.ws.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for text in texts:
            await alice.send(conv, text)
        # The node writes a socket itself only while at most WRITE_BUFFER_HIGH waits in its
        # buffer, adding a round's frames (one message here): the rest went through aiohttp's
        # writer, as messages, their queued headers taken off.
        transport = session._transport
        assert transport is not None
        assert transport.get_write_buffer_size() > WRITE_BUFFER_HIGH + 16 * 1024
        got: list[tuple[int, str | None]] = []
        seqs: list[int] = []
        while len(got) < len(texts):
            event = msgspec.json.decode(await ws.receive_str(timeout=10))
            if event["type"] == "chat.message":
                seqs.append(event["seq"])
                got.append((event["message"]["seq"], event["message"]["text"]))
        assert got == [(i + 2, text) for i, text in enumerate(texts)]
        assert seqs == list(range(seqs[0], seqs[0] + len(texts)))
        await ws.close()

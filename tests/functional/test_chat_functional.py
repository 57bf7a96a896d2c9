"""Chat over real sockets and real Redis: conversations, messages, receipts, history."""

from __future__ import annotations

import asyncio

import pytest

from chat import wire as w
from huddle.chat import ChatClient
from huddle.client import RequestError
from tests.helpers import Node


async def chat(node: Node, identity: str, device: str | None = None) -> ChatClient:
    client = ChatClient(await node.client(identity, device=device))
    await client.sync()
    return client


async def next_message(c: ChatClient, timeout: float = 5) -> w.ChatMessage:
    event = await c.client.next_event("chat.message", timeout)
    assert isinstance(event, w.ChatMessageEvent)
    return event.message


async def test_group_message_reaches_every_member_with_sequence_numbers(node: Node) -> None:
    alice, bob, carol = [await chat(node, u) for u in ("alice", "bob", "carol")]
    conv = await alice.create("group", "trip", ["bob", "carol"])
    assert conv.kind == "group" and conv.role == "owner" and conv.members == 3
    for c in (alice, bob, carol):
        created = await next_message(c)
        assert created.kind == "system" and created.system is not None
        assert created.system.event == "created"
    sent = await alice.send(conv.conv, "hello 大家好")
    assert sent.seq == 2 and not sent.duplicate
    for c in (bob, carol, alice):
        msg = await next_message(c)
        assert (msg.seq, msg.sender, msg.text) == (2, "alice", "hello 大家好")
        assert msg.ts == sent.ts
    history = await carol.history(conv.conv)
    assert [m.seq for m in history] == [1, 2]


async def test_same_client_id_is_stored_once(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    first = await alice.send(to="bob", text="once", client_id="c-1")
    again = await alice.send(to="bob", text="once", client_id="c-1")
    assert again.duplicate and (again.seq, again.ts, again.conv) == (first.seq, first.ts, first.conv)
    assert [m.text for m in await bob.history(first.conv)] == ["once"]


async def test_direct_conversation_made_on_first_message(node: Node) -> None:
    alice, bob = await chat(node, "alice"), await chat(node, "bob")
    sent = await alice.send(to="bob", text="hi bob")
    joined = await bob.client.next_event("chat.joined")
    assert isinstance(joined, w.ChatJoined) and joined.conv == sent.conv
    assert joined.info.kind == "direct" and joined.info.name == "alice"
    msg = await next_message(bob)
    assert msg.text == "hi bob"
    reply = await bob.send(to="alice", text="hi alice")
    assert reply.conv == sent.conv and reply.seq == 2
    listed = await bob.conversations()
    assert [(c.conv, c.peer, c.last_seq) for c in listed] == [(sent.conv, "alice", 2)]


async def test_non_member_is_refused(node: Node) -> None:
    alice, mallory = await chat(node, "alice"), await chat(node, "mallory")
    conv = await alice.create("group", "private", [])
    with pytest.raises(RequestError) as info:
        await mallory.send(conv.conv, "let me in")
    assert info.value.code == "not_member"
    with pytest.raises(RequestError) as info:
        await mallory.history(conv.conv)
    assert info.value.code == "not_member"
    await asyncio.sleep(0.1)
    assert [m.seq for m in await alice.history(conv.conv)] == [1]

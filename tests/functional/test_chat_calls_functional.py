"""One-to-one calls leave system messages in the two users' direct conversation."""

from __future__ import annotations

import pytest

from chat import wire as w
from chat.store import direct_id
from huddle.chat import ChatClient
from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import eventually


def calls(c: ChatClient, conv: str) -> list[w.SystemInfo]:
    return [m.system for m in c.messages(conv) if m.system is not None]


@pytest.mark.redis_cluster
async def test_started_and_ended_with_duration_then_missed(start_node: StartNode) -> None:
    node = await start_node(ring_timeout_s=0.5, ring_sweep_s=0.1)
    alice = ChatClient(await node.client("alice"))
    bob = ChatClient(await node.client("bob"))
    await alice.sync()
    await bob.sync()
    conv = direct_id("alice", "bob")

    invite = await alice.request(p.CallInvite(id="", to="bob", media="video"))
    await bob.client.next_event("call.incoming")
    await bob.request(p.CallAccept(id="", call=invite.call))
    await alice.request(p.CallHangup(id="", call=invite.call))
    await eventually(lambda: len(calls(bob, conv)) == 2)
    started, ended = calls(bob, conv)
    assert (started.event, started.call, started.by, started.media) == (
        "call_started",
        invite.call,
        "bob",
        "video",
    )
    assert (ended.event, ended.by, ended.reason) == ("call_ended", "alice", "hangup")
    assert ended.duration_s is not None and ended.duration_s >= 0
    assert started.users == ["alice", "bob"]

    missed = await bob.request(p.CallInvite(id="", to="alice", media="audio"))
    await eventually(lambda: len(calls(alice, conv)) == 3, timeout=5)
    last = calls(alice, conv)[-1]
    assert (last.event, last.call, last.reason, last.users) == (
        "call_missed",
        missed.call,
        "no_answer",
        ["bob", "alice"],
    )
    # Stored once: history holds the same three records.
    history = [m.system.event for m in await alice.history(conv) if m.system]
    assert history == ["call_started", "call_ended", "call_missed"]

"""One-to-one calls leave system messages in the two users' direct conversation."""

from __future__ import annotations

import asyncio

import pytest

from chat import wire as w
from chat.store import direct_id
from huddle.chat import ChatClient
from signaling import protocol as p
from tests.conftest import StartNode
from tests.functional.test_ringing_functional import drain
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


async def _joined_call(
    client: ChatClient, reply: p.CallInviteOk, events: list[p.Event]
) -> tuple[str, str]:
    """After a call.invite that may have crossed the callee's: the call and room this device
    is in, from its reply and the events it got."""
    if reply.answered:
        return reply.call, reply.room
    for event in events:
        if isinstance(event, p.CallMerged) and event.call == reply.call:
            return event.into, event.room
        if isinstance(event, p.CallAccepted) and event.call == reply.call:
            return reply.call, event.room
    raise AssertionError(f"{reply} and then {events}: in no call")


@pytest.mark.redis_cluster
async def test_two_users_who_call_each_other_at_once_talk_in_one_call(
    start_node: StartNode,
) -> None:
    """Both press Call at the same moment, on two nodes: the two calls merge into one, which
    both are in, and the chat records a call, not a missed one."""
    first = await start_node()
    second = await start_node()
    alice = ChatClient(await first.client("alice", device="phone"))
    bob = ChatClient(await second.client("bob", device="phone"))
    bob_laptop = await first.client("bob", device="laptop")
    await alice.sync()
    conv = direct_id("alice", "bob")
    for round_ in range(8):
        for c in (alice.client, bob.client, bob_laptop):
            while not c.events.empty():
                c.events.get_nowait()
        a_reply, b_reply = await asyncio.gather(
            alice.request(p.CallInvite(id="", to="bob", media="video")),
            bob.request(p.CallInvite(id="", to="alice", media="video")),
        )
        a_events = await drain(alice.client)
        b_events = await drain(bob.client)
        a_in, b_in = (
            await _joined_call(alice, a_reply, a_events),
            await _joined_call(bob, b_reply, b_events),
        )
        assert a_in == b_in, (round_, a_reply, b_reply, a_events, b_events)
        call = a_in[0]
        # Nothing rings any more on any device: each call that rang was cancelled, answered
        # elsewhere, or is the one this device answered.
        for events in (a_events, b_events, await drain(bob_laptop)):
            rung = {e.call for e in events if isinstance(e, p.CallIncoming)}
            stopped = {
                e.call
                for e in events
                if isinstance(e, p.CallCancelled | p.CallAnsweredElsewhere | p.CallMerged)
            }
            assert rung - stopped - {call} == set(), (round_, events)
        await alice.request(p.CallHangup(id="", call=call))
        assert (await bob.client.next_event("call.ended")).call == call
    await eventually(lambda: len(calls(alice, conv)) == 16, timeout=5)
    assert [s.event for s in calls(alice, conv)] == ["call_started", "call_ended"] * 8


async def test_calling_someone_who_is_calling_you_answers_them(start_node: StartNode) -> None:
    node = await start_node()
    alice = ChatClient(await node.client("alice", device="phone"))
    bob = ChatClient(await node.client("bob", device="phone"))
    bob_laptop = await node.client("bob", device="laptop")
    await alice.sync()
    placed = await alice.request(p.CallInvite(id="", to="bob", media="audio"))
    await bob.client.next_event("call.incoming")
    await bob_laptop.next_event("call.incoming")
    # Bob, rung, presses Call in the conversation instead of Answer.
    reply = await bob.request(p.CallInvite(id="", to="alice", media="video"))
    assert (reply.call, reply.answered) == (placed.call, True)
    accepted = await alice.client.next_event("call.accepted")
    assert (accepted.call, accepted.by, accepted.device, accepted.room) == (
        placed.call,
        "bob",
        "phone",
        reply.room,
    )
    assert (await bob_laptop.next_event("call.answered_elsewhere")).call == placed.call
    await bob.request(p.CallHangup(id="", call=placed.call))
    await eventually(lambda: len(calls(alice, direct_id("alice", "bob"))) == 2)
    assert [s.event for s in calls(alice, direct_id("alice", "bob"))] == [
        "call_started",
        "call_ended",
    ]

"""1:1 calls that ring (call.invite ... call.hangup) over real sockets and real Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as redis

from calls.ring_script import (
    DEADLINES,
    call_key,
    members_key,
    user_call_key,
    user_ringing_key,
)
from calls.ringing import ENDED_TTL_S
from huddle.client import HuddleClient, RequestError
from signaling import protocol as p
from signaling.server import HUB
from tests.conftest import StartNode
from tests.helpers import Node, NodeProcess, all_keys, make_token

FAST_RING = {"ring_timeout_s": 1.0, "ring_sweep_s": 0.1}
QUIET_S = 0.3


async def drain(client: HuddleClient, quiet: float = QUIET_S) -> list[p.Event]:
    """Every event that arrives until none has come for ``quiet`` seconds."""
    got: list[p.Event] = []
    while True:
        try:
            got.append(await asyncio.wait_for(client.events.get(), quiet))
        except TimeoutError:
            return got


def kinds(events: list[p.Event]) -> list[str]:
    return [e.__struct_config__.tag for e in events]  # type: ignore[misc]


async def invite(
    caller: HuddleClient, to: str, media: p.CallMedia = "audio", call: str | None = None
) -> p.CallInviteOk:
    reply: p.CallInviteOk = await caller.request(p.CallInvite(id="", to=to, media=media, call=call))
    return reply


async def refused(client: HuddleClient, request: p.Request) -> str:
    with pytest.raises(RequestError) as info:
        await client.request(request)
    return info.value.code


async def accepted_call(node: Node) -> tuple[HuddleClient, HuddleClient, str]:
    """alice calls bob, bob accepts: (alice, bob, call)."""
    alice = await node.client("alice", device="phone")
    bob = await node.client("bob", device="phone")
    call = (await invite(alice, "bob")).call
    await bob.next_event("call.incoming")
    await bob.request(p.CallAccept(id="", call=call))
    await alice.next_event("call.accepted")
    return alice, bob, call


async def marker(r: redis.Redis, user: str) -> str | None:
    value = await r.get(user_call_key(user))
    return value.decode() if isinstance(value, bytes) else value


# --- ringing and the first accept --------------------------------------------------------


@pytest.mark.redis_cluster
async def test_invite_rings_every_callee_device_and_first_accept_wins(
    node: Node, redis_client: redis.Redis
) -> None:
    alice = await node.client("alice", device="phone")
    alice_laptop = await node.client("alice", device="laptop")
    bobs = [await node.client("bob", device=d) for d in ("phone", "laptop", "tablet")]

    reply = await invite(alice, "bob", "video")
    call = reply.call
    assert reply.room == f"call-{call}"
    for bob in bobs:
        incoming = await bob.next_event("call.incoming")
        assert (incoming.call, incoming.from_, incoming.media) == (call, "alice", "video")
        assert incoming.from_name == "alice"
    outgoing = await alice_laptop.next_event("call.outgoing")
    assert (outgoing.call, outgoing.to, outgoing.media) == (call, "bob", "video")
    assert await drain(alice) == []  # the requesting connection has its reply

    answers = await asyncio.gather(
        *(b.request(p.CallAccept(id="", call=call)) for b in bobs), return_exceptions=True
    )
    winners = [(b, a) for b, a in zip(bobs, answers, strict=True) if isinstance(a, p.Reply)]
    losers = [(b, a) for b, a in zip(bobs, answers, strict=True) if isinstance(a, Exception)]
    assert len(winners) == 1, answers
    winner, ok = winners[0]
    assert isinstance(ok, p.CallAcceptOk)
    assert (ok.call, ok.room) == (call, reply.room)
    assert [a.code for _, a in losers if isinstance(a, RequestError)] == ["call_not_ringing"] * 2

    for caller_device in (alice, alice_laptop):
        accepted = await caller_device.next_event("call.accepted")
        assert (accepted.call, accepted.room, accepted.by) == (call, reply.room, "bob")
        assert accepted.device == winner.device
    for loser, _ in losers:
        assert kinds(await drain(loser)) == ["call.answered_elsewhere"]
    assert await drain(winner) == []
    assert await marker(redis_client, "alice") == call
    assert await marker(redis_client, "bob") == call
    assert await redis_client.zcard(DEADLINES) == 0
    assert await redis_client.zcard(user_ringing_key("bob")) == 0


async def test_device_connecting_while_ringing_is_rung(node: Node) -> None:
    alice = await node.client("alice")
    call = (await invite(alice, "bob", "video")).call
    # Bob had no device online: his phone rings as soon as it says hello.
    bob = await node.client("bob", device="phone")
    events = await drain(bob)
    assert kinds(events) == ["call.incoming"]
    assert isinstance(events[0], p.CallIncoming)
    assert (events[0].call, events[0].from_, events[0].media, events[0].seq) == (
        call,
        "alice",
        "video",
        1,
    )
    # Once the ring is over, a connecting device is not rung.
    await alice.request(p.CallCancel(id="", call=call))
    assert kinds(await drain(bob)) == ["call.cancelled"]
    laptop = await node.client("bob", device="laptop")
    assert await drain(laptop) == []


async def test_decline(node: Node, redis_client: redis.Redis) -> None:
    alice = await node.client("alice", device="phone")
    bob_phone = await node.client("bob", device="phone")
    bob_laptop = await node.client("bob", device="laptop")
    call = (await invite(alice, "bob")).call
    await bob_phone.next_event("call.incoming")
    await bob_laptop.next_event("call.incoming")

    assert isinstance(await bob_phone.request(p.CallDecline(id="", call=call)), p.Ok)
    declined = await alice.next_event("call.declined")
    assert (declined.call, declined.by) == (call, "bob")
    ended = await bob_laptop.next_event("call.ended")
    assert (ended.call, ended.reason) == (call, "declined")
    assert await drain(bob_phone) == []
    assert await marker(redis_client, "alice") is None
    assert await refused(bob_laptop, p.CallAccept(id="", call=call)) == "call_not_ringing"
    assert await refused(alice, p.CallCancel(id="", call=call)) == "call_not_ringing"
    # Alice is free again.
    assert (await invite(alice, "bob")).call != call


async def test_cancel(node: Node, redis_client: redis.Redis) -> None:
    alice = await node.client("alice", device="phone")
    alice_laptop = await node.client("alice", device="laptop")
    bobs = [await node.client("bob", device=d) for d in ("phone", "laptop")]
    call = (await invite(alice, "bob")).call
    for bob in bobs:
        await bob.next_event("call.incoming")
    assert await refused(bobs[0], p.CallCancel(id="", call=call)) == "forbidden"

    await alice.request(p.CallCancel(id="", call=call))
    for bob in bobs:
        assert kinds(await drain(bob)) == ["call.cancelled"]
    ended = await alice_laptop.next_event("call.ended")
    assert (ended.call, ended.reason) == (call, "cancelled")
    assert await refused(bobs[0], p.CallAccept(id="", call=call)) == "call_not_ringing"
    assert await marker(redis_client, "alice") is None
    assert await redis_client.zcard(DEADLINES) == 0


@pytest.mark.redis_cluster
async def test_busy_and_already_in_call(node: Node, redis_client: redis.Redis) -> None:
    alice, bob, call = await accepted_call(node)
    carol = await node.client("carol")
    dave = await node.client("dave")
    assert await refused(carol, p.CallInvite(id="", to="bob", media="audio")) == "busy"
    assert await refused(carol, p.CallInvite(id="", to="alice", media="video")) == "busy"
    assert await refused(alice, p.CallInvite(id="", to="dave", media="audio")) == (
        "already_in_call"
    )
    assert await drain(dave) == []  # a refused invite rings nobody

    # Placing a call counts as being in one.
    from_carol = (await invite(carol, "dave")).call
    erin = await node.client("erin")
    assert await refused(erin, p.CallInvite(id="", to="carol", media="audio")) == "busy"
    assert await refused(carol, p.CallInvite(id="", to="erin", media="audio")) == (
        "already_in_call"
    )
    # Being rung is not: two calls may ring for dave, but he can take only one.
    frank = await node.client("frank")
    from_frank = (await invite(frank, "dave")).call
    assert {e.call for e in await drain(dave) if isinstance(e, p.CallIncoming)} == {
        from_carol,
        from_frank,
    }
    assert isinstance(await dave.request(p.CallAccept(id="", call=from_carol)), p.CallAcceptOk)
    assert await refused(dave, p.CallAccept(id="", call=from_frank)) == "already_in_call"

    await bob.request(p.CallHangup(id="", call=call))
    assert await marker(redis_client, "bob") is None
    assert await marker(redis_client, "alice") is None
    assert (await invite(erin, "bob")).call


# --- timeouts, hangup, escalation ---------------------------------------------------------


@pytest.mark.redis_cluster
async def test_ring_timeout_ends_as_missed_once_across_nodes(
    start_node: StartNode, redis_client: redis.Redis
) -> None:
    # Both nodes sweep every 0.1 s: the timeout must still fire once.
    first = await start_node(**FAST_RING)
    second = await start_node(**FAST_RING)
    alice = await first.client("alice", device="phone")
    alice_laptop = await second.client("alice", device="laptop")
    bob_phone = await first.client("bob", device="phone")
    bob_laptop = await second.client("bob", device="laptop")
    started = time.monotonic()
    call = (await invite(alice, "bob", "video")).call

    ended = await alice.next_event("call.ended", timeout=5)
    took = time.monotonic() - started
    assert (ended.call, ended.reason) == (call, "no_answer")
    assert 0.9 <= took < 3, took
    for bob in (bob_phone, bob_laptop):
        events = await drain(bob, quiet=0.5)
        assert kinds(events) == ["call.incoming", "call.missed"]
        missed = events[1]
        assert isinstance(missed, p.CallMissed)
        assert (missed.call, missed.from_, missed.from_name, missed.media) == (
            call,
            "alice",
            "alice",
            "video",
        )
    assert kinds(await drain(alice_laptop)) == ["call.outgoing", "call.ended"]
    assert await drain(alice) == []  # exactly one call.ended
    assert await redis_client.hget(call_key(call), "state") == b"ended"
    assert await redis_client.hget(call_key(call), "reason") == b"no_answer"
    assert await redis_client.zcard(DEADLINES) == 0
    assert await marker(redis_client, "alice") is None
    assert await refused(bob_phone, p.CallAccept(id="", call=call)) == "call_not_ringing"


async def test_hangup_by_either_party(node: Node, redis_client: redis.Redis) -> None:
    alice, bob, call = await accepted_call(node)
    bob_laptop = await node.client("bob", device="laptop")  # connects during the call
    assert await drain(bob_laptop) == []  # not rung: the call is no longer ringing for bob
    await bob.request(p.CallHangup(id="", call=call))
    ended = await alice.next_event("call.ended")
    assert (ended.call, ended.reason) == (call, "hangup")
    assert kinds(await drain(bob_laptop)) == ["call.ended"]
    assert await drain(bob) == []
    assert await marker(redis_client, "alice") is None
    assert await marker(redis_client, "bob") is None
    assert await refused(alice, p.CallHangup(id="", call=call)) == "call_not_active"
    assert await refused(alice, p.CallUpdate(id="", call=call, media="video")) == (
        "call_not_active"
    )
    # The caller may hang up just as well.
    call2 = (await invite(alice, "bob")).call
    await bob.next_event("call.incoming")
    await bob.request(p.CallAccept(id="", call=call2))
    await alice.request(p.CallHangup(id="", call=call2))
    ended = await bob.next_event("call.ended")
    assert (ended.call, ended.reason) == (call2, "hangup")


async def test_leaving_the_calls_room_hangs_up(start_node: StartNode) -> None:
    """A page reloaded mid-call comes back as the same device (its call kept for it) but
    knows only the room (call.resumed), not the call: leaving the room hangs up for it, and
    the caller is not left alone in a call that never ends. Leaving another room does not."""
    node = await start_node(ice_addresses=["127.0.0.1"])
    alice, bob, call = await accepted_call(node)
    room = (await bob.request(p.CallJoin(id="", room="elsewhere"))).room
    await bob.request(p.CallLeave(id="", room=room))
    assert await drain(alice) == []  # another room: the call goes on
    await bob.request(p.CallJoin(id="", room=f"call-{call}"))
    await bob.request(p.CallLeave(id="", room=f"call-{call}"))
    ended = await alice.next_event("call.ended")
    assert (ended.call, ended.reason) == (call, "hangup")
    assert await refused(bob, p.CallHangup(id="", call=call)) == "call_not_active"
    # Hung up first, then the room left (what the web app does): nothing more to end.
    alice, bob, call = await accepted_call(node)
    await bob.request(p.CallJoin(id="", room=f"call-{call}"))
    await bob.request(p.CallHangup(id="", call=call))
    assert kinds(await drain(alice)) == ["call.ended"]
    await bob.request(p.CallLeave(id="", room=f"call-{call}"))
    assert await drain(alice) == []


async def test_escalate_to_video_and_back(node: Node) -> None:
    alice, bob, call = await accepted_call(node)
    await alice.request(p.CallUpdate(id="", call=call, media="video"))
    updated = await bob.next_event("call.updated")
    assert (updated.call, updated.media, updated.by) == (call, "video", "alice")
    await bob.request(p.CallUpdate(id="", call=call, media="audio"))
    updated = await alice.next_event("call.updated")
    assert (updated.media, updated.by) == ("audio", "bob")
    assert await drain(bob) == []  # not told about its own update


async def test_update_and_hangup_need_an_accepted_call(node: Node) -> None:
    alice = await node.client("alice")
    bob = await node.client("bob")
    call = (await invite(alice, "bob")).call
    assert await refused(alice, p.CallUpdate(id="", call=call, media="video")) == (
        "call_not_active"
    )
    assert await refused(alice, p.CallHangup(id="", call=call)) == "call_not_active"
    assert await refused(alice, p.CallAccept(id="", call=call)) == "call_not_ringing"
    assert kinds(await drain(bob)) == ["call.incoming"]


# --- more people --------------------------------------------------------------------------


@pytest.mark.redis_cluster
async def test_invite_a_third_person_into_the_call(node: Node, redis_client: redis.Redis) -> None:
    alice, bob, call = await accepted_call(node)
    carol = await node.client("carol")
    reply = await invite(alice, "carol", "video", call=call)
    assert (reply.call, reply.room) == (call, f"call-{call}")
    incoming = await carol.next_event("call.incoming")
    assert (incoming.call, incoming.from_, incoming.media) == (call, "alice", "video")
    # Inviting someone who already rings for the call does not ring them twice.
    assert (await invite(bob, "carol", "video", call=call)).call == call
    ok: p.CallAcceptOk = await carol.request(p.CallAccept(id="", call=call))
    assert ok.room == reply.room
    for member in (alice, bob):
        accepted = await member.next_event("call.accepted")
        assert (accepted.by, accepted.room) == ("carol", reply.room)
    assert await drain(carol) == []
    members = await redis_client.hgetall(members_key(call))
    assert set(members) == {b"alice", b"bob", b"carol"}

    # A member hangs up: the call goes on for the other two.
    await bob.request(p.CallHangup(id="", call=call))
    for member in (alice, carol):
        left = await member.next_event("call.left")
        assert (left.call, left.user, left.reason) == (call, "bob", "hangup")
    await carol.request(p.CallUpdate(id="", call=call, media="audio"))
    assert (await alice.next_event("call.updated")).by == "carol"
    # The last but one hangs up: the call is over.
    await carol.request(p.CallHangup(id="", call=call))
    ended = await alice.next_event("call.ended")
    assert (ended.call, ended.reason) == (call, "hangup")
    assert await redis_client.hget(call_key(call), "state") == b"ended"


async def test_group_invitations_that_are_declined_or_missed(start_node: StartNode) -> None:
    node = await start_node(**FAST_RING)
    alice, bob, call = await accepted_call(node)
    carol = await node.client("carol")
    dave = await node.client("dave")
    await invite(bob, "carol", call=call)
    await invite(alice, "dave", call=call)
    await carol.next_event("call.incoming")
    await carol.request(p.CallDecline(id="", call=call))
    left = await alice.next_event("call.left")
    assert (left.user, left.reason) == ("carol", "declined")
    missed = await dave.next_event("call.missed", timeout=5)
    assert (missed.call, missed.from_) == (call, "alice")
    for member in (alice, bob):
        events = [e for e in await drain(member, quiet=0.5) if isinstance(e, p.CallLeft)]
        assert [(e.user, e.reason) for e in events] == (
            [("dave", "no_answer")]
            if member is alice
            else [("carol", "declined"), ("dave", "no_answer")]
        )
    # The call itself goes on, and carol may be invited again.
    await alice.request(p.CallUpdate(id="", call=call, media="video"))
    assert (await bob.next_event("call.updated")).media == "video"
    await invite(alice, "carol", call=call)
    assert (await carol.next_event("call.incoming")).call == call


async def test_last_member_waits_for_a_ringing_invitee(node: Node) -> None:
    alice, bob, call = await accepted_call(node)
    carol = await node.client("carol")
    await invite(alice, "carol", call=call)
    await carol.next_event("call.incoming")
    await bob.request(p.CallHangup(id="", call=call))
    assert (await alice.next_event("call.left")).user == "bob"
    # Alice, alone, still waits for carol; carol declining ends the call.
    await carol.request(p.CallDecline(id="", call=call))
    declined = await alice.next_event("call.declined")
    assert (declined.call, declined.by) == (call, "carol")
    assert await refused(alice, p.CallHangup(id="", call=call)) == "call_not_active"


# --- refusals -----------------------------------------------------------------------------


async def test_refusals(node: Node) -> None:
    alice = await node.client("alice")
    bob = await node.client("bob")
    carol = await node.client("carol")
    assert await refused(alice, p.CallInvite(id="", to="alice", media="audio")) == (
        "cannot_call_self"
    )
    call = (await invite(alice, "bob")).call
    # Someone else's call looks exactly like a call that does not exist.
    for request in (
        p.CallAccept(id="", call=call),
        p.CallDecline(id="", call=call),
        p.CallCancel(id="", call=call),
        p.CallHangup(id="", call=call),
        p.CallUpdate(id="", call=call, media="video"),
        p.CallInvite(id="", to="dave", media="audio", call=call),
    ):
        with pytest.raises(RequestError) as mine:
            await carol.request(request)
        with pytest.raises(RequestError) as unknown:
            await carol.request(msgspec.structs.replace(request, call="0123456789abcdef"))
        assert (mine.value.code, mine.value.message) == ("unknown_call", "no such call")
        assert (unknown.value.code, unknown.value.message) == (mine.value.code, mine.value.message)
    # Inviting into a call that still rings is refused.
    assert await refused(alice, p.CallInvite(id="", to="carol", media="audio", call=call)) == (
        "call_not_active"
    )
    # Malformed fields are refused by the types.
    for frame in (
        '{"id": "x1", "type": "call.invite", "to": "bob", "media": "hologram"}',
        '{"id": "x2", "type": "call.invite", "to": "not valid!", "media": "audio"}',
        '{"id": "x3", "type": "call.invite", "media": "audio"}',
        '{"id": "x4", "type": "call.accept", "call": "../../etc"}',
        '{"id": "x5", "type": "call.accept", "call": 5}',
        '{"id": "x6", "type": "call.update", "call": "abc", "media": "smell"}',
    ):
        await alice.send_raw(frame)
    await asyncio.sleep(0.3)
    assert [e.code for e in alice.unmatched_errors] == ["invalid_field"] * 6
    assert [e.re for e in alice.unmatched_errors] == ["x1", "x2", "x3", "x4", "x5", "x6"]
    assert kinds(await drain(bob)) == ["call.incoming"]


# --- connections going away ----------------------------------------------------------------


async def test_closing_the_connection_in_the_call_ends_it(start_node: StartNode) -> None:
    node = await start_node(call_resume_s=0.3)
    alice, bob, call = await accepted_call(node)
    closed_at = time.monotonic()
    await bob.close()
    ended = await alice.next_event("call.ended")
    assert (ended.call, ended.reason) == (call, "hangup")
    assert time.monotonic() - closed_at >= 0.3  # the device had its chance to come back
    # The caller's connection closing while it rings cancels the call.
    carol = await node.client("carol")
    dave = await node.client("dave")
    rung = (await invite(carol, "dave")).call
    await dave.next_event("call.incoming")
    await carol.close()
    cancelled = await dave.next_event("call.cancelled")
    assert cancelled.call == rung


async def test_a_device_that_comes_back_in_time_keeps_its_call(start_node: StartNode) -> None:
    first = await start_node(call_resume_s=1.0)
    second = await start_node(call_resume_s=1.0)
    alice, bob, call = await accepted_call(first)
    await bob.close()
    # The same device reconnects, to another node: it is still in the call.
    bob_again = await second.client("bob", device="phone")
    assert await drain(alice, quiet=1.5) == []  # past call_resume_s: nobody hung up
    await bob_again.request(p.CallUpdate(id="", call=call, media="video"))
    assert (await alice.next_event("call.updated")).by == "bob"
    await bob_again.close()
    ended = await alice.next_event("call.ended", timeout=5)  # this time it does not return
    assert (ended.call, ended.reason) == (call, "hangup")
    # Another device of the same user does not take over.
    alice2, bob2, call2 = await accepted_call(second)
    await bob2.close()
    other = await first.client("bob", device="laptop")
    ended = await alice2.next_event("call.ended", timeout=5)
    assert (ended.call, ended.reason) == (call2, "hangup")
    assert await refused(other, p.CallHangup(id="", call=call2)) == "call_not_active"


async def test_a_caller_back_while_it_rings_is_told_of_its_call(start_node: StartNode) -> None:
    """A page reloaded while its call rings comes back as the same device: the node tells
    it that it still places the call (a page that no longer knows it cancels it)."""
    node = await start_node(call_resume_s=5.0)
    alice = await node.client("alice", device="phone")
    alice_laptop = await node.client("alice", device="laptop")
    bob = await node.client("bob", device="phone")
    placed = await invite(alice, "bob", "video")
    outgoing = await alice_laptop.next_event("call.outgoing")
    assert (outgoing.call, outgoing.to, outgoing.resumed) == (placed.call, "bob", False)
    await bob.next_event("call.incoming")
    await alice.close()
    alice_again = await node.client("alice", device="phone")
    again = await alice_again.next_event("call.outgoing")
    assert (again.call, again.to, again.media, again.resumed) == (
        placed.call,
        "bob",
        "video",
        True,
    )
    assert await drain(bob) == []  # it still rings
    await alice_again.request(p.CallCancel(id="", call=placed.call))
    assert (await bob.next_event("call.cancelled")).call == placed.call
    # Back once more: the call is over, nothing to say.
    await alice_again.close()
    alice_third = await node.client("alice", device="phone")
    assert [k for k in kinds(await drain(alice_third)) if k.startswith("call.")] == []


@pytest.mark.redis_cluster
async def test_every_key_expires(node: Node, redis_client: redis.Redis) -> None:
    alice, _, call = await accepted_call(node)
    carol = await node.client("carol")
    await invite(alice, "carol", call=call)
    await carol.next_event("call.incoming")
    keys = [
        call_key(call),
        members_key(call),
        user_call_key("alice"),
        user_call_key("bob"),
        user_ringing_key("carol"),
    ]
    for key in keys:
        assert await redis_client.pttl(key) > 0, key
    # The nodes of the members' connections keep an accepted call alive.
    await redis_client.pexpire(call_key(call), 1000)
    await redis_client.pexpire(user_call_key("bob"), 1000)
    await node.app[HUB].ringing.refresh()
    assert await redis_client.pttl(call_key(call)) > 30_000
    assert await redis_client.pttl(user_call_key("bob")) > 30_000

    await carol.request(p.CallDecline(id="", call=call))
    await alice.request(p.CallHangup(id="", call=call))
    leftovers = await all_keys(redis_client, "huddle:*call*")
    assert sorted(leftovers) == sorted([call_key(call), members_key(call)])
    for key in leftovers:
        assert 0 < await redis_client.pttl(key) <= ENDED_TTL_S * 1000
    assert not await redis_client.exists(DEADLINES)


# --- two nodes ------------------------------------------------------------------------------


@pytest.mark.redis_cluster
async def test_caller_and_callee_on_different_nodes(start_node: StartNode) -> None:
    first = await start_node()
    second = await start_node()
    alice = await first.client("alice", device="phone")
    bob_phone = await first.client("bob", device="phone")
    bob_laptop = await second.client("bob", device="laptop")
    call = (await invite(alice, "bob", "video")).call
    await bob_phone.next_event("call.incoming")
    await bob_laptop.next_event("call.incoming")
    ok: p.CallAcceptOk = await bob_laptop.request(p.CallAccept(id="", call=call))
    accepted = await alice.next_event("call.accepted")
    assert (accepted.device, accepted.room) == ("laptop", ok.room)
    assert kinds(await drain(bob_phone)) == ["call.answered_elsewhere"]
    await alice.request(p.CallUpdate(id="", call=call, media="audio"))
    assert (await bob_laptop.next_event("call.updated")).media == "audio"
    await alice.request(p.CallHangup(id="", call=call))
    assert (await bob_laptop.next_event("call.ended")).reason == "hangup"
    # Only the nodes with devices of a member subscribe to its user channel.
    carol_channel = "huddle:{user:carol}:calls"
    for node in (first, second):
        assert carol_channel not in node.app[HUB].broker._handlers


@pytest.fixture
def two_processes(
    redis_url: str, redis_client: object, tmp_path: Path
) -> Iterator[list[NodeProcess]]:
    args = ["--ring-timeout-s", "2", "--ring-sweep-s", "0.2"]
    nodes = [NodeProcess(tmp_path / f"n{i}", redis_url=redis_url, args=args) for i in range(2)]
    try:
        yield nodes
    finally:
        for n in nodes:
            n.close()


async def test_invite_survives_the_callers_node_dying(
    two_processes: list[NodeProcess], redis_client: redis.Redis
) -> None:
    a, b = two_processes
    await a.wait_healthy()
    await b.wait_healthy()
    async with (
        HuddleClient(a.url, make_token("alice")) as alice,
        HuddleClient(b.url, make_token("bob")) as bob,
    ):
        await alice.hello()
        await bob.hello(device="phone")
        call = (await invite(alice, "bob", "video")).call
        incoming = await bob.next_event("call.incoming")
        assert (incoming.call, incoming.from_) == (call, "alice")
        a.kill()  # no goodbye: the invite lives on in Redis
        missed = await bob.next_event("call.missed", timeout=10)
        assert (missed.call, missed.from_, missed.media) == (call, "alice", "video")
        assert await drain(bob, quiet=0.6) == []  # once
        assert await redis_client.hget(call_key(call), "reason") == b"no_answer"
        assert await marker(redis_client, "alice") is None
        # Bob's node is unaffected, and alice is not left busy.
        async with HuddleClient(b.url, make_token("carol")) as carol:
            await carol.hello()
            assert (await invite(carol, "alice")).call

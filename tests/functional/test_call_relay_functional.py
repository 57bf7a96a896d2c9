"""A call room lives on one node; devices on other nodes take part through it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, cast

import av
import pytest

from huddle.call import CallClient
from huddle.client import HuddleClient, RequestError
from signaling import protocol as p
from signaling.presence import devices_key
from signaling.server import HUB
from tests.conftest import StartNode
from tests.functional.test_ringing_functional import drain
from tests.helpers import Node, NodeProcess, make_token
from tests.media import ColorTrack, ToneTrack, close_colour, mean_rgb


async def _call(node: Node, identity: str, room: str) -> CallClient:
    return await node.call(identity, room)


async def _sees(call: CallClient, who: str, colour: tuple[int, int, int]) -> None:
    while True:
        track, info = await call.next_track()
        if info.kind == "video":
            break
    assert info.identity == who
    for _ in range(5):
        frame = await asyncio.wait_for(track.recv(), 10)
    assert isinstance(frame, av.VideoFrame)
    assert close_colour(mean_rgb(frame), colour)


@pytest.mark.redis_cluster
async def test_participants_on_two_nodes_share_a_room(start_node: StartNode) -> None:
    first = await start_node(ice_addresses=["127.0.0.1"])
    second = await start_node(ice_addresses=["127.0.0.1"])
    alice = await _call(first, "alice", "across")  # opens the room on the first node
    bob = await _call(second, "bob", "across")  # relayed by the second node
    assert [x.identity for x in bob.joined.participants] == ["alice"]  # type: ignore[union-attr]
    joined = await alice.client.next_event("call.participant_joined")
    assert joined.participant.identity == "bob"

    await alice.publish(ColorTrack((250, 200, 0)), ToneTrack(300))
    await bob.publish(ColorTrack((0, 120, 250)))
    await _sees(bob, "alice", (250, 200, 0))
    await _sees(alice, "bob", (0, 120, 250))

    stats = await bob.client.request(p.CallStats(id="", room="across"))
    assert {t.kind for t in stats.subscribed} == {"audio", "video"}
    assert stats.published and stats.published[0].packets > 0
    with pytest.raises(RequestError) as info:
        await bob.client.request(p.CallJoin(id="", room="other"))
    assert info.value.code == "already_in_call"

    await bob.leave()
    left = await alice.client.next_event("call.participant_left")
    assert left.participant == bob.participant
    await alice.close()


async def test_relayed_device_dropping_leaves_after_grace(start_node: StartNode) -> None:
    first = await start_node(ice_addresses=["127.0.0.1"], call_resume_s=0.3)
    second = await start_node(ice_addresses=["127.0.0.1"], call_resume_s=0.3)
    alice = await _call(first, "alice", "drop")
    bob = await _call(second, "bob", "drop")
    await bob.client.close()
    left = await alice.client.next_event("call.participant_left", timeout=5)
    assert left.participant == bob.participant
    await bob.close()
    await alice.close()


async def test_a_relayed_device_restarts_its_media(start_node: StartNode) -> None:
    first = await start_node(ice_addresses=["127.0.0.1"])
    second = await start_node(ice_addresses=["127.0.0.1"])
    alice = await _call(first, "alice", "across")
    bob = await _call(second, "bob", "across")  # relayed by the second node
    await alice.publish(ColorTrack((250, 200, 0)))
    await bob.publish(ColorTrack((0, 120, 250)))
    await _sees(bob, "alice", (250, 200, 0))
    await _sees(alice, "bob", (0, 120, 250))
    await bob.restart_media()  # sfu.restart, relayed to the room's node
    await _sees(bob, "alice", (250, 200, 0))
    await _sees(alice, "bob", (0, 120, 250))
    await alice.close()
    await bob.close()


# --- a node that goes away ------------------------------------------------------------------

# Nodes that know each other dead within a couple of seconds (the defaults: 45 s).
FAST_LIVENESS: Final = {"presence_ttl_s": 1.5, "presence_refresh_s": 0.3, "call_resume_s": 0.5}


def _args(settings: dict[str, float]) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()] + ["--sfu-workers=0"]


@pytest.fixture
def process_node(redis_url: str, redis_client: object, tmp_path: Path) -> Iterator[NodeProcess]:
    node = NodeProcess(tmp_path / "process", redis_url=redis_url, args=_args(FAST_LIVENESS))
    try:
        yield node
    finally:
        node.close()


async def test_a_member_whose_node_dies_leaves_the_room(
    start_node: StartNode, process_node: NodeProcess
) -> None:
    """The room's node hears of nothing when another node dies with a device in its room:
    the device's presence entry expires, and it leaves as if its connection had closed."""
    first = await start_node(**FAST_LIVENESS)
    alice = await first.client("alice")
    await alice.request(p.CallJoin(id="", room="kept"))
    await process_node.wait_healthy()
    async with HuddleClient(process_node.url, make_token("bob"), device="phone") as bob:
        await bob.hello()
        joined: p.CallJoinOk = await bob.request(p.CallJoin(id="", room="kept"))  # relayed
        assert (await alice.next_event("call.participant_joined")).participant.identity == "bob"
        process_node.kill()  # no goodbye
        left = await alice.next_event("call.participant_left", timeout=10)
        assert left.participant == joined.participant
    carol = await first.client("carol")
    again: p.CallJoinOk = await carol.request(p.CallJoin(id="", room="kept"))
    assert [x.identity for x in again.participants] == ["alice"]


async def test_the_rooms_node_stopping_tells_members_elsewhere_to_join_again(
    start_node: StartNode,
) -> None:
    first = await start_node()
    second = await start_node()
    alice = await first.client("alice")
    await alice.request(p.CallJoin(id="", room="moving"))  # the room lives on the first
    bob = await second.client("bob")
    carol = await second.client("carol")
    for c in (bob, carol):
        await c.request(p.CallJoin(id="", room="moving"))
    await first.stop()
    for c in (bob, carol):
        event = await c.next_event("call.reconnect", timeout=5)
        assert (event.room, event.reason) == ("moving", "node_stopped")
    # At once (no 20 s wait for a node that is gone): the room opens anew on the second.
    started = time.monotonic()
    reply: p.CallJoinOk = await bob.request(p.CallJoin(id="", room="moving"), timeout=5)
    assert reply.participants == []
    again: p.CallJoinOk = await carol.request(p.CallJoin(id="", room="moving"), timeout=5)
    assert [x.identity for x in again.participants] == ["bob"]
    assert time.monotonic() - started < 3
    assert second.app[HUB].calls.rooms.keys() == {"moving"}


async def test_the_rooms_node_dying_tells_members_elsewhere_to_join_again(
    start_node: StartNode, process_node: NodeProcess
) -> None:
    await process_node.wait_healthy()
    second = await start_node(**FAST_LIVENESS)
    async with HuddleClient(process_node.url, make_token("alice")) as alice:
        await alice.hello()
        await alice.request(p.CallJoin(id="", room="orphaned"))  # on the process node
        bob = await second.client("bob")
        await bob.request(p.CallJoin(id="", room="orphaned"))  # relayed to it
        process_node.kill()
        event = await bob.next_event("call.reconnect", timeout=10)
        assert (event.room, event.reason) == ("orphaned", "node_lost")
        reply: p.CallJoinOk = await bob.request(p.CallJoin(id="", room="orphaned"), timeout=5)
        assert reply.participants == []  # opened on the second node


async def test_a_device_replaced_on_another_node_keeps_its_call(
    start_node: StartNode, redis_url: str, redis_client: object, tmp_path: Path
) -> None:
    """A device in a call says hello on another node while its old connection is still open
    (a network change): it resumes its call at once, wherever the room lives, without
    waiting for the old connection to close (its node hears of the replacement through
    Redis, closes it and only then would say where the call is)."""
    room_node = await start_node(call_resume_s=30.0)
    other = await start_node(call_resume_s=30.0)
    process = NodeProcess(
        tmp_path / "process", redis_url=redis_url, args=["--call-resume-s=30", "--sfu-workers=0"]
    )
    try:
        await process.wait_healthy()
        alice = await room_node.client("alice")
        await alice.request(p.CallJoin(id="", room="switch"))  # the room lives here
        bob = HuddleClient(process.url, make_token("bob"), device="phone")
        await bob.connect()
        await bob.hello()
        joined: p.CallJoinOk = await bob.request(p.CallJoin(id="", room="switch"))  # relayed
        await alice.next_event("call.participant_joined")
        for round_ in range(8):
            # Back and forth between the process and the in-process node.
            if round_ % 2 == 0:
                bob_again = await other.client("bob", device="phone")
            else:
                bob_again = HuddleClient(process.url, make_token("bob"), device="phone")
                await bob_again.connect()
                await bob_again.hello()
            resumed = await bob_again.next_event("call.resumed", timeout=5)
            assert (resumed.room, resumed.participant) == ("switch", joined.participant), round_
            assert await bob.wait_closed() == p.CloseCode.REPLACED
            await bob.close()
            bob = bob_again
        await bob.request(p.CallLeave(id="", room="switch"))
        left = await alice.next_event("call.participant_left")
        assert left.participant == joined.participant
        await bob.close()
        assert await drain(alice) == []  # the same participant all along
    finally:
        process.close()


async def test_a_presence_entry_missing_for_a_moment_ends_no_call(
    start_node: StartNode, redis_client: object
) -> None:
    """A device's presence entry can be missing for a moment (a Redis that restarted without
    it, until its node registers it again): the room's node does not take that for its node
    being gone."""
    first = await start_node(call_resume_s=0.3)
    second = await start_node(call_resume_s=0.3)
    alice = await first.client("alice")
    await alice.request(p.CallJoin(id="", room="steady"))
    bob = await second.client("bob", device="phone")
    await bob.request(p.CallJoin(id="", room="steady"))  # relayed to the first node
    await alice.next_event("call.participant_joined")
    calls = first.app[HUB].calls
    await cast(Any, redis_client).hdel(devices_key("bob"), "phone")
    await calls.check_remote()  # gone, once
    await second.app[HUB]._refresh()  # its node registers it again
    await calls.check_remote()
    await asyncio.sleep(0.6)  # past call_resume_s
    assert await drain(alice) == []  # nobody left
    [member] = [m for s, m in calls.members.items() if m.identity == "bob"]
    assert member.session is not None

"""A call room lives on one node; devices on other nodes take part through it."""

from __future__ import annotations

import asyncio

import av
import pytest

from huddle.call import CallClient
from huddle.client import RequestError
from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import Node
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

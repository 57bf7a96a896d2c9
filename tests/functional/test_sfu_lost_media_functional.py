"""The SFU notices when a participant's peer connections end under it (the device dropped
them, or ICE consent expired) while its signaling stays: the others stop getting its tracks,
nothing is offered on the dead connection, and a media restart brings everything back."""

from __future__ import annotations

import asyncio
import logging

import av
import pytest
from aiortc import MediaStreamTrack

from huddle.call import CallClient
from tests.conftest import StartNode
from tests.helpers import eventually, local_room
from tests.media import ColorTrack, close_colour, mean_rgb

ALICE, BOB, CAROL = (220, 40, 40), (40, 200, 40), (40, 60, 220)


async def colour_of(track: MediaStreamTrack) -> tuple[float, float, float]:
    frames = [await asyncio.wait_for(track.recv(), 10) for _ in range(4)]
    assert isinstance(frames[-1], av.VideoFrame)
    return mean_rgb(frames[-1])


async def colours(call: CallClient, n: int) -> dict[str, tuple[float, float, float]]:
    got = {}
    for _ in range(n):
        track, info = await call.next_track()
        got[info.identity] = await colour_of(track)
    return got


async def test_connections_closed_under_the_sfu_are_dropped_until_a_restart(
    start_node: StartNode, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="huddle")
    node = await start_node(ice_addresses=["127.0.0.1"])
    alice = await node.call("alice", "room")
    bob = await node.call("bob", "room")
    bob.auto_restart = False  # this test restarts bob's media itself, later
    await alice.publish(ColorTrack(ALICE))
    await bob.publish(ColorTrack(BOB))
    assert close_colour((await colours(alice, 1))["bob"], BOB)
    assert close_colour((await colours(bob, 1))["alice"], ALICE)
    room = local_room(node, "room")
    seat = next(p for p in room.participants.values() if p.identity == "bob")

    # bob's device drops both connections; its WebSocket stays.
    for pc in (bob.publisher, bob.subscriber):
        assert pc is not None
        await pc.close()
    await eventually(lambda: seat.publisher is None and seat.subscriber is None, timeout=10)
    assert seat.published == {} and seat.subscriptions == {}
    assert seat in room.participants.values()  # still in the room, waiting for a restart
    ended = await asyncio.wait_for(alice.ended.get(), 10)
    assert ended.identity == "bob"

    # A newcomer publishes: alice gets carol, and bob is offered nothing on the dead link.
    carol = await node.call("carol", "room")
    await carol.publish(ColorTrack(CAROL))
    assert close_colour((await colours(alice, 1))["carol"], CAROL)
    assert seat.subscriber is None and not seat.negotiating

    # bob starts his media over (publishing the same camera again): he gets alice and
    # carol, and they get him again.
    await bob.restart_media()
    got = await colours(bob, 2)
    assert close_colour(got["alice"], ALICE) and close_colour(got["carol"], CAROL), got
    assert close_colour((await colours(alice, 1))["bob"], BOB)
    got = await colours(carol, 2)
    assert close_colour(got["alice"], ALICE) and close_colour(got["bob"], BOB), got
    failures = [r for r in caplog.records if "room task failed" in r.getMessage()]
    assert failures == []
    for call in (alice, bob, carol):
        await call.leave()

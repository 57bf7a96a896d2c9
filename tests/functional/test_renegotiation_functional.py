"""Removing tracks renegotiates: a stopped screen share or a departed publisher leaves the
subscribers' connections with inactive sections, and what remains keeps flowing."""

from __future__ import annotations

import asyncio

import av
from aiortc import MediaStreamTrack
from aiortc.sdp import SessionDescription

from huddle.call import CallClient
from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import eventually, local_room
from tests.media import ColorTrack, ToneTrack, close_colour, mean_rgb

LOOPBACK = {"ice_addresses": ["127.0.0.1"]}


def directions(call: CallClient) -> dict[str, str | None]:
    assert call.subscriber is not None and call.subscriber.remoteDescription is not None
    parsed = SessionDescription.parse(call.subscriber.remoteDescription.sdp)
    return {m.rtp.muxId: m.direction for m in parsed.media}


async def last_frame(track: MediaStreamTrack, n: int) -> av.VideoFrame:
    frames = [await asyncio.wait_for(track.recv(), 10) for _ in range(n)]
    assert isinstance(frames[-1], av.VideoFrame)
    return frames[-1]


async def test_screen_share_stops_and_the_camera_keeps_flowing(start_node: StartNode) -> None:
    node = await start_node(**LOOPBACK)
    alice = await node.call("alice", "room")
    bob = await node.call("bob", "room")
    camera, screen = ColorTrack((220, 40, 40)), ColorTrack((40, 200, 40))
    await alice.publish(camera, ToneTrack(440.0), sources={0: "camera", 1: "microphone"})
    await alice.publish(screen, sources={0: "screen"})
    got = {}
    for _ in range(3):
        track, info = await bob.next_track()
        got[info.source] = (track, info)
    assert set(got) == {"camera", "microphone", "screen"}
    screen_mid = got["screen"][1].mid
    assert directions(bob)[screen_mid] == "sendonly"

    await alice.unpublish(screen)
    ended = await asyncio.wait_for(bob.ended.get(), 10)
    assert (ended.source, ended.mid) == ("screen", screen_mid)
    await eventually(lambda: directions(bob)[screen_mid] == "inactive", timeout=10)
    assert screen_mid not in bob.track_info
    # The camera still arrives, with alice's colour.
    seen = mean_rgb(await last_frame(got["camera"][0], 5))
    assert close_colour(seen, (220, 40, 40)), seen
    await alice.close()
    await bob.close()


async def test_a_departed_publisher_leaves_inactive_sections(start_node: StartNode) -> None:
    node = await start_node(**LOOPBACK)
    alice = await node.call("alice", "room")
    bob = await node.call("bob", "room")
    await alice.publish(ColorTrack((220, 40, 40)), ToneTrack(440.0))
    for _ in range(2):
        await bob.next_track()
    mids = set(bob.track_info)
    await alice.leave()
    ended = {(await asyncio.wait_for(bob.ended.get(), 10)).mid for _ in range(2)}
    assert ended == mids
    await eventually(lambda: all(directions(bob).get(m) == "inactive" for m in mids), 10)
    await bob.close()


async def test_media_restart_on_new_connections_keeps_the_place_in_the_room(
    start_node: StartNode,
) -> None:
    """What a device does when its network changed and ICE cannot recover: it starts its
    media over on new peer connections (sfu.restart), keeping its participant id, and media
    flows both ways again."""
    node = await start_node(**LOOPBACK)
    alice = await node.call("alice", "room")
    bob = await node.call("bob", "room")
    await alice.publish(ColorTrack((220, 40, 40)))
    await bob.publish(ColorTrack((40, 40, 220)))
    track, _ = await bob.next_track()
    await last_frame(track, 3)
    alice_track, _ = await alice.next_track()
    await last_frame(alice_track, 3)
    participant, old = bob.participant, (bob.publisher, bob.subscriber)
    assert bob.subscriber is not None and bob.subscriber.remoteDescription is not None
    old_offer = bob.subscriber.remoteDescription.sdp

    await bob.restart_media()
    assert bob.restarts == 1 and bob.participant == participant
    # An offer for the dropped connection that arrives late is not answered on the new one.
    answered = bob.offers_answered
    bob._on_offer_event(p.SfuOffer(seq=0, room="room", sdp=old_offer, tracks=[]))
    assert all(pc is not None and pc.connectionState == "closed" for pc in old)
    assert bob.publisher not in old and bob.publisher is not None
    track, info = await bob.next_track()
    assert info.identity == "alice"
    assert close_colour(mean_rgb(await last_frame(track, 5)), (220, 40, 40))
    assert bob.offers_answered == answered + 1  # the new connection's offer only
    assert info.mid in bob.track_info
    # Alice is offered bob's track again (his old one ended) and sees his colour.
    ended = await asyncio.wait_for(alice.ended.get(), 10)
    assert ended.identity == "bob"
    again, info = await alice.next_track()
    assert info.identity == "bob"
    assert close_colour(mean_rgb(await last_frame(again, 5)), (40, 40, 220))
    room = local_room(node, "room")
    assert set(room.participants) == {alice.participant, participant}
    await alice.close()
    await bob.close()


async def test_media_restart_in_a_worker_process(start_node: StartNode) -> None:
    node = await start_node(sfu_workers=1, **LOOPBACK)
    alice = await node.call("alice", "room")
    bob = await node.call("bob", "room")
    await alice.publish(ColorTrack((220, 40, 40)))
    track, _ = await bob.next_track()
    await last_frame(track, 3)
    await bob.restart_media()
    track, info = await bob.next_track()
    assert info.identity == "alice"
    assert close_colour(mean_rgb(await last_frame(track, 5)), (220, 40, 40))
    await alice.close()
    await bob.close()

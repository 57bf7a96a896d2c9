"""Track ids in a room, as docs/protocol.md (Calls) defines them: PARTICIPANT:MID for a
plain track, PARTICIPANT:SOURCE for a simulcast source, which stands for its layers."""

from __future__ import annotations

import asyncio

import av
import pytest
from aiortc import MediaStreamTrack

from huddle.client import RequestError
from signaling import protocol as p
from tests.conftest import StartNode
from tests.media import ColorTrack, close_colour, mean_rgb

RED, GREEN, BLUE, YELLOW = (200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0)


async def _shows(track: MediaStreamTrack, *colours: tuple[int, int, int]) -> None:
    """The track's pictures come to one of ``colours`` (a layer switch may come first)."""
    seen: list[tuple[float, float, float]] = []
    for _ in range(90):
        frame = await asyncio.wait_for(track.recv(), 10)
        assert isinstance(frame, av.VideoFrame)
        seen.append(mean_rgb(frame))
        if any(close_colour(seen[-1], colour) for colour in colours):
            return
    raise AssertionError(f"pictures are {seen[-1]}, not any of {colours}")


async def test_plain_tracks_by_mid_and_simulcast_sources_by_name(start_node: StartNode) -> None:
    node = await start_node(ice_addresses=["127.0.0.1"])
    alice = await node.call("alice", "ids")
    bob = await node.call("bob", "ids")
    try:
        await alice.publish(
            ColorTrack((200, 0, 0), (160, 96)),
            ColorTrack((0, 200, 0), (320, 192)),
            ColorTrack((0, 0, 200), (320, 192)),
            sources={0: "camera", 1: "camera", 2: "screen"},
            layers={0: ("cam", 0, 96), 1: ("cam", 1, 192)},
        )
        assert alice.publisher is not None
        mids = [t.mid or "" for t in alice.publisher.getTransceivers()]
        assert len(mids) == 3
        received = {}
        for _ in range(2):
            _, info = await bob.next_track()
            received[info.source] = info
        assert received["camera"].track == f"{alice.participant}:cam"
        assert received["screen"].track == f"{alice.participant}:{mids[2]}"
        assert {i.participant for i in received.values()} == {alice.participant}

        # sfu.track_settings takes the offer's ids; a layer's own id is not a received track.
        await bob.set_max_height(received["camera"].track, 96)
        await bob.set_max_height(received["screen"].track, None)
        with pytest.raises(RequestError) as refused:
            await bob.set_max_height(f"{alice.participant}:{mids[0]}", 96)
        assert refused.value.code == "unknown_track"

        # call.stats: a publisher's own tracks by mid (each layer), a subscriber's by offer id.
        published = await alice.client.request(p.CallStats(id="", room="ids"))
        assert sorted(t.track for t in published.published) == [
            f"{alice.participant}:{mid}" for mid in mids
        ]
        subscribed = await bob.client.request(p.CallStats(id="", room="ids"))
        assert sorted(t.track for t in subscribed.subscribed) == sorted(
            i.track for i in received.values()
        )
    finally:
        for call in (alice, bob):
            await call.close()


async def test_a_source_named_like_a_mid_is_refused(start_node: StartNode) -> None:
    """A simulcast source named "2" beside a screen share at mid 2 would give both the
    track id PARTICIPANT:2, and subscribers would get one of them: the publish is refused
    with invalid_layers and changes nothing; a valid one right after is published whole,
    and the other participant's media flows throughout."""
    node = await start_node(ice_addresses=["127.0.0.1"])
    alice = await node.call("alice", "clash")
    bob = await node.call("bob", "clash")
    try:
        await bob.publish(ColorTrack(YELLOW, (160, 96)))
        bob_camera, _ = await alice.next_track()
        await _shows(bob_camera, YELLOW)

        with pytest.raises(RequestError) as refused:
            await alice.publish(
                ColorTrack(RED, (160, 96)),
                ColorTrack(GREEN, (320, 192)),
                ColorTrack(BLUE, (320, 192)),
                sources={0: "camera", 1: "camera", 2: "screen"},
                layers={0: ("2", 0, 96), 1: ("2", 1, 192)},
            )
        assert refused.value.code == "invalid_layers"
        assert "'2'" in refused.value.message, refused.value.message
        stats = await alice.client.request(p.CallStats(id="", room="clash"))
        assert stats.published == []

        await alice.publish(
            ColorTrack(RED, (160, 96)),
            ColorTrack(GREEN, (320, 192)),
            ColorTrack(BLUE, (320, 192)),
            sources={0: "camera", 1: "camera", 2: "screen"},
            layers={0: ("cam", 0, 96), 1: ("cam", 1, 192)},
        )
        assert alice.publisher is not None
        screen_mid = alice.publisher.getTransceivers()[-1].mid
        received = {}
        for _ in range(2):
            track, info = await bob.next_track()
            received[info.source] = (track, info)
        assert received["camera"][1].track == f"{alice.participant}:cam"
        assert received["screen"][1].track == f"{alice.participant}:{screen_mid}"
        assert {i.track for i in bob.track_info.values()} == {
            f"{alice.participant}:cam",
            f"{alice.participant}:{screen_mid}",
        }
        await _shows(received["screen"][0], BLUE)
        await _shows(received["camera"][0], RED, GREEN)
        stats = await alice.client.request(p.CallStats(id="", room="clash"))
        assert len(stats.published) == 3
        await _shows(bob_camera, YELLOW)
    finally:
        for call in (alice, bob):
            await call.close()

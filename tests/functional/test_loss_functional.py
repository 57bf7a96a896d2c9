"""Loss repair: packets dropped on a subscriber's path are retransmitted from the SFU's
history (NACK), and the subscriber decodes every frame."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable

import av
import pytest

from huddle.call import CallClient
from tests.conftest import StartNode
from tests.helpers import Node, local_room
from tests.media import ColorTrack, close_colour, mean_rgb
from tests.netem import (
    LossyRelay,
    candidate_ports,
    redirect_candidates,
    rtp_payload_type,
    rtp_sequence,
    vp8_payload_type,
)

pytestmark = pytest.mark.redis_any(
    "RTP between aiortc peers and the SFU: the test Redis carries only the joins"
)

DROP_EVERY = 6
FRAME_STEP = 3000  # 90 kHz clock at 30 frames/s


def every_nth_video_packet_once(video_pt: int, dropped: set[int]) -> Callable[[bytes], bool]:
    seen = 0

    def drop(datagram: bytes) -> bool:
        nonlocal seen
        if rtp_payload_type(datagram) != video_pt:
            return False
        seen += 1
        seq = rtp_sequence(datagram)
        if seen % DROP_EVERY or seq in dropped:
            return False
        dropped.add(seq)  # each packet once: its retransmission gets through
        return True

    return drop


async def _two_in_a_call(start_node: StartNode, room: str) -> tuple[Node, CallClient, CallClient]:
    node = await start_node(ice_addresses=["127.0.0.1"])
    calls = [await node.call(identity, room) for identity in ("alice", "bob")]
    return node, calls[0], calls[1]


async def _frames(call: CallClient, count: int) -> list[av.VideoFrame]:
    track, info = await call.next_track()
    assert info.identity == "alice"
    frames: list[av.VideoFrame] = []
    for _ in range(count):
        frame = await asyncio.wait_for(track.recv(), 10)
        assert isinstance(frame, av.VideoFrame)
        frames.append(frame)
    return frames


def _assert_no_frame_missing(frames: list[av.VideoFrame]) -> None:
    steps = [b.pts - a.pts for a, b in itertools.pairwise(frames)]  # type: ignore[operator]
    # Every 1/30 s step of the publisher's clock is there (the encoder's timestamps round to
    # within a tick or two); a lost frame would show as a double step.
    assert all(abs(step - FRAME_STEP) <= 2 for step in steps), steps


def _dropping_upstream(
    relays: list[LossyRelay], dropped: set[int]
) -> Callable[[str, str], Awaitable[str]]:
    """A remote-SDP filter that puts a relay before each of the SFU's candidates, dropping
    every DROP_EVERY-th video packet toward the SFU once (into ``dropped``)."""

    async def through_relay(kind: str, sdp: str) -> str:
        drop_up = every_nth_video_packet_once(vp8_payload_type(sdp), dropped)
        for port in candidate_ports(sdp):
            relay = LossyRelay(("127.0.0.1", port), lambda _: False, drop_to_server=drop_up)
            relays.append(relay)
            sdp = redirect_candidates(sdp, port, await relay.start())
        return sdp

    return through_relay


async def test_loss_towards_subscriber_repaired_from_sfu_history(start_node: StartNode) -> None:
    node, alice, bob = await _two_in_a_call(start_node, "loss-down")
    relays: list[LossyRelay] = []
    dropped: set[int] = set()

    async def through_relay(kind: str, sdp: str) -> str:
        drop = every_nth_video_packet_once(vp8_payload_type(sdp), dropped)
        for port in candidate_ports(sdp):
            relay = LossyRelay(("127.0.0.1", port), drop)
            relays.append(relay)
            sdp = redirect_candidates(sdp, port, await relay.start())
        return sdp

    bob.remote_sdp_filter = through_relay
    colour = (30, 200, 90)
    await alice.publish(ColorTrack(colour))
    frames = await _frames(bob, 75)

    assert len(dropped) >= 8
    _assert_no_frame_missing(frames)
    assert close_colour(mean_rgb(frames[-1]), colour)
    room = local_room(node, "loss-down")
    (track_state,) = room.participants[alice.participant].published.values()
    (output,) = track_state.forwarder.outputs.values()
    assert output.port.retransmitted >= len(dropped) - 2
    for relay in relays:
        relay.close()
    await alice.close()
    await bob.close()


async def test_loss_from_publisher_repaired_by_nack_upstream(start_node: StartNode) -> None:
    node, alice, bob = await _two_in_a_call(start_node, "loss-up")
    relays: list[LossyRelay] = []
    dropped: set[int] = set()
    alice.remote_sdp_filter = _dropping_upstream(relays, dropped)
    colour = (200, 200, 30)
    await alice.publish(ColorTrack(colour))
    frames = await _frames(bob, 75)

    assert len(dropped) >= 8
    _assert_no_frame_missing(frames)
    assert close_colour(mean_rgb(frames[-1]), colour)
    room = local_room(node, "loss-up")
    (track_state,) = room.participants[alice.participant].published.values()
    # The SFU saw every packet in the end: the publisher retransmitted what it NACKed.
    assert track_state.tap.packets >= track_state.forwarder.packets_in >= len(dropped)
    for relay in relays:
        relay.close()
    await alice.close()
    await bob.close()


async def test_loss_from_a_publisher_of_two_videos_is_repaired_too(start_node: StartNode) -> None:
    """A camera and a screen share (or a simulcast camera's layers) are video sections of one
    publisher connection sharing one RTX payload type: their retransmissions must still
    reach the SFU, whichever section they repair."""
    node, alice, bob = await _two_in_a_call(start_node, "loss-up-two")
    relays: list[LossyRelay] = []
    dropped: set[int] = set()
    alice.remote_sdp_filter = _dropping_upstream(relays, dropped)
    camera, screen = (200, 40, 40), (40, 40, 200)
    await alice.publish(ColorTrack(camera), ColorTrack(screen), sources={0: "camera", 1: "screen"})
    received = [await bob.next_track() for _ in range(2)]
    for track, info in received:
        assert info.identity == "alice"
        frames: list[av.VideoFrame] = []
        for _ in range(60):
            frame = await asyncio.wait_for(track.recv(), 10)
            assert isinstance(frame, av.VideoFrame)
            frames.append(frame)
        _assert_no_frame_missing(frames)
        expected = camera if info.source == "camera" else screen
        assert close_colour(mean_rgb(frames[-1]), expected)
    assert len(dropped) >= 8
    room = local_room(node, "loss-up-two")
    published = room.participants[alice.participant].published.values()
    assert len(published) == 2
    for relay in relays:
        relay.close()
    await alice.close()
    await bob.close()

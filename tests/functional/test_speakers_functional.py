"""Active speakers from audio levels, and stream selection in large rooms."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from huddle.call import CallClient
from huddle.client import RequestError
from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import Node, local_room
from tests.media import ColorTrack, ToneTrack


async def _call(node: Node, identity: str, **grants: Any) -> CallClient:
    return await node.call(identity, "big", **grants)


async def test_speakers_ranked_and_only_loudest_forwarded(start_node: StartNode) -> None:
    node = await start_node(
        ice_addresses=["127.0.0.1"],
        selective_forwarding_above=3,
        audio_streams_max=1,
        video_last_n=1,
    )
    loud = await _call(node, "alice")
    quiet = await _call(node, "bob")
    medium = await _call(node, "dave")
    viewer = await _call(node, "carol", can_publish=False)
    await loud.publish(ColorTrack((200, 0, 0)), ToneTrack(440, amplitude=12000))
    await quiet.publish(ColorTrack((0, 200, 0)), ToneTrack(550, amplitude=40))
    await medium.publish(ColorTrack((0, 0, 200)), ToneTrack(660, amplitude=2000))

    # call.speakers: alice loudest, dave speaking too, bob (background level) not at all.
    deadline = time.monotonic() + 10
    events: list[p.CallSpeakers] = []
    while True:
        event = await viewer.client.next_event("call.speakers", timeout=10)
        events.append(event)
        who = [s.participant for s in event.speakers]
        if who == [loud.participant, medium.participant]:
            break
        assert time.monotonic() < deadline, [e.speakers for e in events]
    assert event.speakers[0].level > event.speakers[1].level > 0

    # Four participants is above the threshold of three: carol gets the one loudest audio
    # stream and the video of the one last speaker.
    room = local_room(node, "big")
    me = room.participants[viewer.participant]

    def forwarded() -> dict[tuple[str, str], tuple[bool, int]]:
        out: dict[tuple[str, str], tuple[bool, int]] = {}
        for sub in me.subscriptions.values():
            o = sub.track.forwarder.outputs[sub.port.ssrc]
            out[(sub.track.owner.identity, sub.track.kind)] = (o.active, o.forwarded)
        return out

    before = forwarded()
    await asyncio.sleep(1.0)
    after = forwarded()
    active = {k for k, (on, _) in after.items() if on}
    assert active == {("alice", "audio"), ("alice", "video")}, after
    for key, (on, count) in after.items():
        if on:
            assert count > before[key][1], key
        else:
            assert count == before[key][1], key
    # Pinning bob (who never speaks) brings his video, whatever the speakers do.
    await viewer.client.request(p.CallPin(id="", room="big", participants=[quiet.participant]))
    await asyncio.sleep(0.6)
    active = {k for k, (on, _) in forwarded().items() if on}
    assert active == {("alice", "audio"), ("alice", "video"), ("bob", "video")}, active
    with pytest.raises(RequestError) as info:
        await viewer.client.request(p.CallPin(id="", room="big", participants=["p-nobody"]))
    assert info.value.code == "unknown_participant"
    for call in (loud, quiet, medium, viewer):
        await call.close()


async def test_small_room_forwards_everything(start_node: StartNode) -> None:
    node = await start_node(ice_addresses=["127.0.0.1"])
    alice = await _call(node, "alice")
    bob = await _call(node, "bob")
    await alice.publish(ToneTrack(440, amplitude=100))
    await bob.publish(ToneTrack(880, amplitude=100))
    track, info = await alice.next_track()
    assert info.identity == "bob"
    await asyncio.wait_for(track.recv(), 10)
    room = local_room(node, "big")
    outputs = [
        o
        for part in room.participants.values()
        for t in part.published.values()
        for o in t.forwarder.outputs.values()
    ]
    assert outputs and all(o.active for o in outputs)
    await alice.close()
    await bob.close()


@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "worker"])
async def test_unselected_video_told_in_sfu_paused(start_node: StartNode, workers: int) -> None:
    """The video stream selection leaves out is named in sfu.paused ``unselected`` (not in
    ``tracks``, which is the downlink's), and leaves it once its publisher speaks; from an
    SFU worker process too (ipc.Paused)."""
    node = await start_node(
        ice_addresses=["127.0.0.1"],
        sfu_workers=workers,
        selective_forwarding_above=2,
        audio_streams_max=1,
        video_last_n=1,
    )
    alice = await _call(node, "alice")
    bob = await _call(node, "bob")
    viewer = await _call(node, "carol", can_publish=False)
    alice_tone, bob_tone = ToneTrack(440, amplitude=12000), ToneTrack(550, amplitude=40)
    await alice.publish(ColorTrack((200, 0, 0)), alice_tone)
    await bob.publish(ColorTrack((0, 200, 0)), bob_tone)

    videos: dict[str, str] = {}  # identity -> video track id, as in sfu.offer
    deadline = time.monotonic() + 10
    while len(videos) < 2:
        _, info = await asyncio.wait_for(viewer.next_track(), 10)
        if info.kind == "video":
            videos[info.identity] = info.track
        assert time.monotonic() < deadline

    async def unselected_becomes(want: list[str]) -> None:
        deadline = time.monotonic() + 10
        while viewer.unselected_tracks != want:
            assert time.monotonic() < deadline, (viewer.unselected_tracks, want)
            await asyncio.sleep(0.1)

    # Three participants is above two: carol gets only the last speaker's video, alice's.
    await unselected_becomes([videos["bob"]])
    assert viewer.paused_tracks == []
    # Bob speaks, alice falls silent: his video comes back, hers is left out.
    bob_tone.amplitude, alice_tone.amplitude = 12000, 40
    await unselected_becomes([videos["alice"]])
    assert viewer.paused_tracks == []
    # Pinning alice as well brings both.
    await viewer.client.request(p.CallPin(id="", room="big", participants=[alice.participant]))
    await unselected_becomes([])
    for call in (alice, bob, viewer):
        await call.close()


async def test_a_publisher_nobody_selects_is_asked_to_send_no_video(start_node: StartNode) -> None:
    """In a room that forwards the video of the latest speaker only, a silent publisher's
    simulcast layers are wanted by nobody: they are paused at the publisher (sfu.layers),
    not sent for nothing; once it speaks they come back."""
    node = await start_node(
        ice_addresses=["127.0.0.1"],
        selective_forwarding_above=2,
        audio_streams_max=1,
        video_last_n=1,
    )
    alice, bob, dave = [await _call(node, name) for name in ("alice", "bob", "dave")]
    sizes = [(160, 96), (320, 192), (640, 384)]
    alice_tone = ToneTrack(330, amplitude=40)
    await alice.publish(
        *(ColorTrack((200, 0, 0), size) for size in sizes),
        alice_tone,
        sources={0: "camera", 1: "camera", 2: "camera"},
        layers={i: ("cam", i, size[1]) for i, size in enumerate(sizes)},
    )
    bob_tone, dave_tone = ToneTrack(440, amplitude=12000), ToneTrack(550, amplitude=12000)
    await bob.publish(ColorTrack((0, 200, 0)), bob_tone)
    await dave.publish(ColorTrack((0, 0, 200)), dave_tone)
    room = local_room(node, "big")
    mids = sorted(t.mid for t in room.participants[alice.participant].published.values() if t.group)
    assert len(mids) == 3

    async def paused_becomes(want: list[str]) -> None:
        deadline = time.monotonic() + 10
        while alice.paused_layers != want:
            assert time.monotonic() < deadline, (alice.paused_layers, want)
            await asyncio.sleep(0.1)

    # Bob and dave speak: each gets the other's video, nobody alice's.
    await paused_becomes(mids)
    # Alice speaks, the others fall silent: her video is selected again, and sent.
    alice_tone.amplitude, bob_tone.amplitude, dave_tone.amplitude = 12000, 40, 40
    deadline = time.monotonic() + 10
    while len(alice.paused_layers) == 3:
        assert time.monotonic() < deadline, alice.paused_layers
        await asyncio.sleep(0.1)
    for call in (alice, bob, dave):
        await call.close()

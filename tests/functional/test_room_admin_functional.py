"""Participant state (muted, screen sharing) and room admin actions (mute, remove)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from huddle.call import CallClient
from huddle.client import RequestError
from tests.conftest import StartNode
from tests.helpers import Node, local_room
from tests.media import ColorTrack, ToneTrack


async def _call(node: Node, identity: str, **grants: Any) -> CallClient:
    return await node.call(identity, "meeting", **grants)


def _forwarded(node: Node, owner: str, kind: str) -> int:
    room = local_room(node, "meeting")
    (track,) = [t for t in room.participants[owner].published.values() if t.kind == kind]
    return sum(o.forwarded for o in track.forwarder.outputs.values())


@pytest.mark.redis_cluster
async def test_state_mute_and_remove(start_node: StartNode) -> None:
    node = await start_node(ice_addresses=["127.0.0.1"])
    host = await _call(node, "host", admin=True)
    bob = await _call(node, "bob")
    carol = await _call(node, "carol")
    await bob.publish(ColorTrack((10, 10, 10)), ToneTrack(440))
    for _ in range(2):
        track, _info = await carol.next_track()
        await asyncio.wait_for(track.recv(), 10)

    # Bob says he shares his screen: everyone else hears of it, with his whole state.
    await bob.set_state(screen_sharing=True)
    state = await carol.client.next_event("call.participant_state")
    assert state.participant.participant == bob.participant
    assert state.participant.screen_sharing and not state.participant.audio_muted

    # Only an admin may mute others.
    with pytest.raises(RequestError) as info:
        await carol.mute(bob.participant, "audio")
    assert info.value.code == "forbidden"
    with pytest.raises(RequestError) as info:
        await host.mute("p-nobody", "audio")
    assert info.value.code == "unknown_participant"

    await host.mute(bob.participant, "audio")
    muted = await bob.client.next_event("call.muted")
    assert muted.kind == "audio" and muted.by == host.participant
    state = await carol.client.next_event("call.participant_state")
    assert state.participant.audio_muted
    # The SFU stops forwarding his audio (video goes on) until he unmutes himself.
    await asyncio.sleep(0.2)
    audio_before, video_before = (_forwarded(node, bob.participant, k) for k in ("audio", "video"))
    await asyncio.sleep(0.6)
    assert _forwarded(node, bob.participant, "audio") == audio_before
    assert _forwarded(node, bob.participant, "video") > video_before
    await bob.set_state(audio_muted=False)
    await asyncio.sleep(0.6)
    assert _forwarded(node, bob.participant, "audio") > audio_before

    # Removing: bob is told, everyone else sees him leave.
    await host.remove(bob.participant)
    await asyncio.wait_for(bob.removed.wait(), 5)
    left = await carol.client.next_event("call.participant_left")
    assert left.participant == bob.participant
    assert bob.participant not in local_room(node, "meeting").participants
    for call in (host, bob, carol):
        await call.close()

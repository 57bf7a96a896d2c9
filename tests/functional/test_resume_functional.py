"""A participant whose socket drops and comes back in time resumes its call: same
participant, media never stopped, nobody saw it leave."""

from __future__ import annotations

import asyncio

import av
import pytest

from huddle.call import CallClient
from huddle.client import HuddleClient
from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import Node
from tests.media import ColorTrack, close_colour, mean_rgb


async def _client(node: Node, identity: str, device: str) -> HuddleClient:
    return await node.client(identity, device=device)


async def test_dropped_socket_resumes_call_without_rejoining(start_node: StartNode) -> None:
    node = await start_node(ice_addresses=["127.0.0.1"], call_resume_s=5)
    alice_ws = await _client(node, "alice", "phone")
    alice = CallClient(alice_ws, "resume")
    await alice.join()
    bob = CallClient(await _client(node, "bob", "laptop"), "resume")
    await bob.join()
    await alice.publish(ColorTrack((240, 120, 0)))
    track, _ = await bob.next_track()
    await asyncio.wait_for(track.recv(), 10)

    # Alice's socket drops (her peer connections to the SFU stay up).
    await alice_ws.close()
    frames = 0
    for _ in range(30):  # about a second of video while she is away
        frame = await asyncio.wait_for(track.recv(), 5)
        frames += 1
    assert frames == 30
    # She comes back on the same device: same participant, no rejoin needed.
    again = await _client(node, "alice", "phone")
    resumed = await again.next_event("call.resumed", timeout=5)
    assert resumed.room == "resume" and resumed.participant == alice.participant
    stats = await again.request(p.CallStats(id="", room="resume"))
    assert stats.published and stats.published[0].packets > 30
    frame = await asyncio.wait_for(track.recv(), 5)
    assert isinstance(frame, av.VideoFrame)
    assert close_colour(mean_rgb(frame), (240, 120, 0))
    # Bob never saw her leave.
    with pytest.raises(TimeoutError):
        await bob.client.next_event("call.participant_left", timeout=0.3)
    await alice.close()
    await bob.close()


async def test_not_coming_back_leaves_after_grace(start_node: StartNode) -> None:
    node = await start_node(ice_addresses=["127.0.0.1"], call_resume_s=0.5)
    alice_ws = await _client(node, "alice", "phone")
    alice = CallClient(alice_ws, "gone")
    await alice.join()
    bob = CallClient(await _client(node, "bob", "laptop"), "gone")
    await bob.join()
    await alice_ws.close()
    left = await bob.client.next_event("call.participant_left", timeout=5)
    assert left.participant == alice.participant
    # Coming back later is a fresh start: no resume.
    again = await _client(node, "alice", "phone")
    with pytest.raises(TimeoutError):
        await again.next_event("call.resumed", timeout=0.3)
    await alice.close()
    await bob.close()


@pytest.mark.redis_cluster
@pytest.mark.parametrize("back_on", ["owner", "relay"])
async def test_a_device_resumes_on_another_node(start_node: StartNode, back_on: str) -> None:
    """Bob's room lives on the first node. His socket drops and he comes back on another
    node (the room's own, or the one that relayed him): same participant, media never
    stopped, nobody saw him leave, and his requests reach the room again."""
    settings = {"ice_addresses": ["127.0.0.1"], "call_resume_s": 5}
    first, second = await start_node(**settings), await start_node(**settings)
    alice = CallClient(await _client(first, "alice", "phone"), "across")
    await alice.join()  # opens the room on the first node
    bob_ws = await _client(second, "bob", "laptop")
    bob = CallClient(bob_ws, "across")
    await bob.join()  # relayed by the second node
    await bob.publish(ColorTrack((0, 160, 240)))
    track, _ = await alice.next_track()
    await asyncio.wait_for(track.recv(), 10)

    await bob_ws.close()
    for _ in range(15):  # his media goes on while he is away
        await asyncio.wait_for(track.recv(), 5)
    node = first if back_on == "owner" else second
    again = await _client(node, "bob", "laptop")
    resumed = await again.next_event("call.resumed", timeout=5)
    assert resumed.room == "across" and resumed.participant == bob.participant
    stats = await again.request(p.CallStats(id="", room="across"))
    assert stats.published and stats.published[0].packets > 15
    frame = await asyncio.wait_for(track.recv(), 5)
    assert isinstance(frame, av.VideoFrame)
    assert close_colour(mean_rgb(frame), (0, 160, 240))
    with pytest.raises(TimeoutError):
        await alice.client.next_event("call.participant_left", timeout=0.3)
    await alice.close()
    await bob.close()


async def test_call_client_carries_on_over_a_new_connection_with_a_request_made_meanwhile(
    start_node: StartNode,
) -> None:
    """CallClient.resume: alice's socket drops, she mutes while it is down (the request
    waits instead of failing), and once a new connection of her device is handed to the
    call, the call is resumed (same participant, no rejoin) and the mute reaches bob."""
    node = await start_node(ice_addresses=["127.0.0.1"], call_resume_s=5)
    alice_ws = await _client(node, "alice", "phone")
    alice = CallClient(alice_ws, "carry-on")
    await alice.join()
    bob = CallClient(await _client(node, "bob", "laptop"), "carry-on")
    await bob.join()
    await alice.publish(ColorTrack((30, 200, 90)))
    track, _ = await bob.next_track()
    await asyncio.wait_for(track.recv(), 10)
    participant = alice.participant

    await alice_ws.close()
    muting = asyncio.create_task(alice.set_state(audio_muted=True))
    await asyncio.sleep(0.3)
    assert not muting.done()  # waiting for the connection, not failed
    again = await node.client("alice", device="phone", hello=False)
    assert await alice.resume(again) is True
    await asyncio.wait_for(muting, 5)
    assert alice.participant == participant and alice.rejoins == 0 and alice.resumes == 1
    state = await bob.client.next_event("call.participant_state", timeout=5)
    assert state.participant.participant == participant and state.participant.audio_muted
    # Requests after the resume go over the new connection.
    stats = await alice.client.request(p.CallStats(id="", room="carry-on"))
    assert stats.published and stats.published[0].packets > 0
    frame = await asyncio.wait_for(track.recv(), 5)
    assert isinstance(frame, av.VideoFrame)
    assert close_colour(mean_rgb(frame), (30, 200, 90))
    await alice.close()
    await bob.close()


async def test_call_client_back_too_late_joins_again_and_publishes_again(
    start_node: StartNode,
) -> None:
    node = await start_node(ice_addresses=["127.0.0.1"], call_resume_s=0.3)
    alice_ws = await _client(node, "alice", "phone")
    alice = CallClient(alice_ws, "too-late")
    await alice.join()
    bob = CallClient(await _client(node, "bob", "laptop"), "too-late")
    await bob.join()
    await alice.publish(ColorTrack((200, 40, 40)))
    first, _ = await bob.next_track()
    await asyncio.wait_for(first.recv(), 10)
    old = alice.participant

    await alice_ws.close()
    left = await bob.client.next_event("call.participant_left", timeout=5)
    assert left.participant == old
    again = await node.client("alice", device="phone", hello=False)
    assert await alice.resume(again, timeout=0.5) is False
    assert alice.rejoins == 1 and alice.participant != old
    track, info = await bob.next_track()
    while info.participant != alice.participant:
        track, info = await bob.next_track()
    frame = await asyncio.wait_for(track.recv(), 10)
    assert isinstance(frame, av.VideoFrame)
    assert close_colour(mean_rgb(frame), (200, 40, 40))
    await alice.close()
    await bob.close()

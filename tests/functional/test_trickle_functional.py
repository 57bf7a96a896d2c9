"""Trickle ICE: clients send their SDP without candidates, then the candidates one by one."""

from __future__ import annotations

import asyncio

import av
import pytest

from huddle.call import CallClient, split_candidates
from huddle.client import RequestError
from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import Node, local_room
from tests.media import ColorTrack, close_colour, mean_rgb


async def _call(node: Node, identity: str) -> CallClient:
    return await node.call(identity, "trickle", trickle=True)


def test_split_candidates_finds_each_sections_mid() -> None:
    sdp = "\r\n".join(
        [
            "v=0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host",
            "a=end-of-candidates",
            "a=mid:0",
            "m=video 9 UDP/TLS/RTP/SAVPF 97",
            "a=mid:1",
            "a=candidate:2 1 udp 2130706431 127.0.0.1 5002 typ host",
            "",
        ]
    )
    stripped, found = split_candidates(sdp)
    assert "candidate" not in stripped and "end-of-candidates" not in stripped
    assert found == [
        ("0", 0, "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"),
        ("1", 1, "candidate:2 1 udp 2130706431 127.0.0.1 5002 typ host"),
    ]


async def test_trickled_candidates_connect_both_connections(start_node: StartNode) -> None:
    node = await start_node(ice_addresses=["127.0.0.1"])
    alice = await _call(node, "alice")
    bob = await _call(node, "bob")
    await alice.publish(ColorTrack((0, 180, 180)))
    track, _info = await bob.next_track()
    for _ in range(5):
        frame = await asyncio.wait_for(track.recv(), 10)
    assert isinstance(frame, av.VideoFrame)
    assert close_colour(mean_rgb(frame), (0, 180, 180))
    # The SFU knows the clients' host candidates: they came by trickle (the SDPs carried
    # none; an address learnt from connectivity checks alone would be peer-reflexive).
    room = local_room(node, "trickle")
    for participant, which in ((alice.participant, "publisher"), (bob.participant, "subscriber")):
        pc = getattr(room.participants[participant], which)
        remote = pc.getTransceivers()[0].receiver.transport.transport.getRemoteCandidates()
        assert [c for c in remote if c.ip == "127.0.0.1" and c.type == "host"], which

    for bad, code in [("candidate:garbage", "bad_candidate"), ("x" * 10, "bad_candidate")]:
        with pytest.raises(RequestError) as err:
            await alice.client.request(
                p.SfuCandidate(id="", room="trickle", pc="publisher", candidate=bad, sdp_mid="0")
            )
        assert err.value.code == code
    with pytest.raises(RequestError) as err:
        await alice.client.request(
            p.SfuCandidate(id="", room="trickle", pc="subscriber", candidate=None)
        )
    assert err.value.code == "no_offer"  # alice receives nothing yet: no subscriber connection
    await alice.close()
    await bob.close()

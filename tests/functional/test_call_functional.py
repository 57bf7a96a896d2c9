"""Group calls through the SFU with real aiortc peers exchanging real RTP on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import aiortc.rtcrtpreceiver as aiortc_receiver
import av
import pytest
from aiortc import MediaStreamTrack

from huddle.call import CallClient
from huddle.client import HuddleClient, RequestError
from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import Node, make_token
from tests.media import ColorTrack, ToneTrack, close_colour, dominant_frequency, mean_rgb

LOOPBACK = {"ice_addresses": ["127.0.0.1"]}
PUBLISHERS = {"alice": ((220, 40, 40), 440.0), "bob": ((40, 60, 220), 880.0)}


@pytest.fixture
def decoders(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every decoder aiortc creates in this process (server and test clients alike)."""
    created: list[str] = []
    original = aiortc_receiver.get_decoder  # type: ignore[attr-defined]

    def spy(codec: Any) -> Any:
        created.append(codec.mimeType)
        return original(codec)

    monkeypatch.setattr(aiortc_receiver, "get_decoder", spy)
    yield created


async def _join(node: Node, identity: str, room: str = "standup", **grants: Any) -> CallClient:
    return await node.call(identity, room, **grants)


async def _check_track(track: MediaStreamTrack, info: p.TrackInfo) -> None:
    colour, tone = PUBLISHERS[info.identity]
    if info.kind == "video":
        frames = [await asyncio.wait_for(track.recv(), 10) for _ in range(10)]
        assert isinstance(frames[-1], av.VideoFrame)
        seen = mean_rgb(frames[-1])
        assert close_colour(seen, colour), (info.identity, seen, colour)
    else:
        frames = [await asyncio.wait_for(track.recv(), 10) for _ in range(40)]
        assert all(isinstance(f, av.AudioFrame) for f in frames)
        heard = dominant_frequency(frames[10:])  # type: ignore[arg-type]
        assert abs(heard - tone) < 15, (info.identity, heard, tone)


async def test_group_call_forwards_right_media_without_decoding(
    start_node: StartNode, decoders: list[str]
) -> None:
    node = await start_node(**LOOPBACK)
    alice = await _join(node, "alice")
    bob = await _join(node, "bob")
    carol = await _join(node, "carol", can_publish=False)
    assert {x.identity for x in carol.joined.participants} == {"alice", "bob"}  # type: ignore[union-attr]

    for call in (alice, bob):
        colour, tone = PUBLISHERS[call.client.hello_reply.identity]  # type: ignore[union-attr]
        await call.publish(
            ColorTrack(colour), ToneTrack(tone), sources={0: "camera", 1: "microphone"}
        )

    expected = {"alice": {"bob"}, "bob": {"alice"}, "carol": {"alice", "bob"}}
    checks = []
    received = 0
    for call in (alice, bob, carol):
        me = call.client.hello_reply.identity  # type: ignore[union-attr]
        seen: dict[str, set[str]] = {}
        for _ in range(2 * len(expected[me])):
            track, info = await call.next_track()
            seen.setdefault(info.identity, set()).add(info.kind)
            checks.append(_check_track(track, info))
            received += 1
        assert seen == {who: {"audio", "video"} for who in expected[me]}
    await asyncio.gather(*checks)

    # Only the test clients' receivers decode: one decoder per received track, none in the SFU.
    assert len(decoders) == received == 8
    # Sender reports reaching a subscriber carry the true packet counts of what was forwarded.
    assert carol.subscriber is not None
    await asyncio.sleep(2.5)  # at least one RTCP interval
    stats = await carol.subscriber.getStats()
    inbound = {s.ssrc: s for s in stats.values() if s.type == "inbound-rtp"}
    remote = [s for s in stats.values() if s.type == "remote-outbound-rtp"]
    assert len(remote) == 4
    for report in remote:
        assert report.packetsSent > 20
        assert report.packetsSent <= inbound[report.ssrc].packetsReceived + 100
        assert report.bytesSent > 0

    for call in (alice, bob, carol):
        await call.close()


async def test_participant_events_and_refusals(start_node: StartNode) -> None:
    node = await start_node(room_capacity=2, **LOOPBACK)
    alice = await _join(node, "alice")
    carol = await _join(node, "carol", can_publish=False)
    joined = await alice.client.next_event("call.participant_joined")
    assert joined.participant.identity == "carol"

    with pytest.raises(RequestError) as info:
        await carol.publish(ColorTrack((1, 2, 3)))
    assert info.value.code == "forbidden"

    with pytest.raises(RequestError) as info:
        await _join(node, "dave")
    assert info.value.code == "room_full"

    with pytest.raises(RequestError) as info:
        await alice.client.request(p.CallJoin(id="", room="other"))
    assert info.value.code == "already_in_call"

    for bad in ["not sdp", "v=0\r\nm=nonsense\r\n"]:
        with pytest.raises(RequestError) as info:
            await alice.client.request(p.SfuPublish(id="", room="standup", sdp=bad))
        assert info.value.code == "bad_sdp", bad
    with pytest.raises(RequestError) as info:
        await alice.client.request(p.SfuAnswer(id="", room="standup", sdp="v=0\r\n"))
    assert info.value.code == "no_offer"
    with pytest.raises(RequestError) as info:
        await alice.client.request(p.SfuPublish(id="", room="elsewhere", sdp="v=0\r\n"))
    assert info.value.code == "not_in_call"

    limited = HuddleClient(node.url, make_token("erin", rooms=["private"]))
    node.clients.append(limited)
    await limited.connect()
    await limited.hello()
    with pytest.raises(RequestError) as info:
        await limited.request(p.CallJoin(id="", room="standup"))
    assert info.value.code == "forbidden"

    # The room and its members are unaffected by all of that.
    await carol.leave()
    left = await alice.client.next_event("call.participant_left")
    assert left.participant == carol.participant
    await alice.publish(ColorTrack((9, 9, 9)))
    await alice.close()


async def test_stats_over_socket_and_metrics(start_node: StartNode) -> None:
    node = await start_node(**LOOPBACK)
    alice = await _join(node, "alice", room="stats")
    bob = await _join(node, "bob", room="stats")
    await alice.publish(ColorTrack((10, 20, 30)), ToneTrack(500))
    for _ in range(2):
        track, _info = await bob.next_track()
        await asyncio.wait_for(track.recv(), 10)
    await asyncio.sleep(2.5)  # receiver reports carry loss and round-trip time

    mine = await alice.client.request(p.CallStats(id="", room="stats"))
    assert {t.kind for t in mine.published} == {"audio", "video"}
    for t in mine.published:
        assert t.packets > 20 and t.bytes > 0 and t.bitrate_bps > 0
        assert t.subscribers == 1
        assert t.packets_lost == 0
        assert t.duplicates == 0  # aiortc probes with no copies
    assert mine.subscribed == []

    deadline = time.monotonic() + 10
    while True:  # the round-trip time needs a sender report answered by a receiver report
        theirs = await bob.client.request(p.CallStats(id="", room="stats"))
        if all(t.rtt_ms is not None for t in theirs.subscribed) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.3)
    assert {t.kind for t in theirs.subscribed} == {"audio", "video"}
    for t in theirs.subscribed:
        assert t.participant == alice.participant
        assert t.packets > 20 and t.bitrate_bps > 0 and t.active
        assert t.fraction_lost == 0.0
        assert t.rtt_ms is not None and 0 <= t.rtt_ms < 1000
    with pytest.raises(RequestError) as info:
        await bob.client.request(p.CallStats(id="", room="elsewhere"))
    assert info.value.code == "not_in_call"

    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/metrics") as resp:
        text = await resp.text()
    assert "huddle_sfu_rooms 1.0" in text
    assert 'huddle_sfu_room_participants{room="stats"} 2.0' in text
    assert 'huddle_sfu_room_duplicates_in_total{room="stats"} 0.0' in text
    prefix = "huddle_sfu_track_packets_forwarded_total{"
    forwarded = [
        line for line in text.splitlines() if line.startswith(prefix) and 'identity="alice"' in line
    ]
    assert len(forwarded) == 2
    assert all(float(line.rsplit(" ", 1)[1]) > 0 for line in forwarded)
    await alice.close()
    await bob.close()


async def test_many_audio_tracks_reach_one_subscriber(start_node: StartNode) -> None:
    """Several tracks of one kind on a subscriber connection: all of them arrive."""
    node = await start_node(**LOOPBACK)
    tones = {"p1": 300.0, "p2": 520.0, "p3": 740.0}
    # The listener is there first: each publisher renegotiates its subscriber connection.
    listener = await _join(node, "listener", room="choir")
    publishers = []
    for identity, tone in tones.items():
        call = await _join(node, identity, room="choir")
        await call.publish(ColorTrack((1, 2, 3)), ToneTrack(tone))
        publishers.append(call)
        await asyncio.sleep(0.3)
    heard: dict[str, float] = {}
    for _ in range(2 * len(tones)):
        track, info = await listener.next_track()
        if info.kind == "video":
            await asyncio.wait_for(track.recv(), 10)
            continue
        frames = [await asyncio.wait_for(track.recv(), 10) for _ in range(40)]
        heard[info.identity] = dominant_frequency(frames[10:])  # type: ignore[arg-type]
    assert heard.keys() == tones.keys()
    for identity, tone in tones.items():
        assert abs(heard[identity] - tone) < 15, (identity, heard[identity])
    for call in (*publishers, listener):
        await call.close()


async def test_codecs_and_track_limit(start_node: StartNode) -> None:
    from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription

    node = await start_node(**LOOPBACK)
    alice = await _join(node, "alice", room="codecs")
    bob = await _join(node, "bob", room="codecs")
    video = RTCRtpSender.getCapabilities("video").codecs

    async def offer(preferred: list[str], tracks: int = 1) -> tuple[RTCPeerConnection, str]:
        pc = RTCPeerConnection()
        for _ in range(tracks):
            transceiver = pc.addTransceiver(ColorTrack((5, 5, 5)), direction="sendonly")
            transceiver.setCodecPreferences(
                [c for name in preferred for c in video if c.mimeType == name]
            )
        await pc.setLocalDescription(await pc.createOffer())
        return pc, pc.localDescription.sdp

    # H264 alone cannot be forwarded to VP8 subscribers: refused, nothing half made.
    pc, sdp = await offer(["video/H264"])
    with pytest.raises(RequestError) as info:
        await alice.client.request(p.SfuPublish(id="", room="codecs", sdp=sdp))
    assert info.value.code == "unsupported_codec"
    await pc.close()
    # More tracks than a participant may publish.
    pc, sdp = await offer(["video/VP8"], tracks=9)
    with pytest.raises(RequestError) as info:
        await alice.client.request(p.SfuPublish(id="", room="codecs", sdp=sdp))
    assert info.value.code == "too_many_tracks"
    await pc.close()
    # H264 preferred but VP8 offered too: the SFU answers with VP8 and it flows.
    pc, sdp = await offer(["video/H264", "video/VP8", "video/rtx"])
    reply = await alice.client.request(p.SfuPublish(id="", room="codecs", sdp=sdp))
    assert "VP8/90000" in reply.sdp and "H264" not in reply.sdp
    await pc.setRemoteDescription(RTCSessionDescription(reply.sdp, "answer"))
    track, info_ = await bob.next_track()
    assert info_.identity == "alice"
    frame = await asyncio.wait_for(track.recv(), 10)
    assert isinstance(frame, av.VideoFrame)
    await pc.close()
    await alice.close()
    await bob.close()

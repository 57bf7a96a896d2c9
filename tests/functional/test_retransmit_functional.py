"""Retransmissions within a budget, between real aiortc peers on loopback: the subscriber's
NACKs are real RTCP from its receivers, and what the SFU re-sends is counted on the wire by a
relay on the subscriber's path (RTX for video; for audio, which has no RTX, the same sequence
number seen twice)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import pytest
from aiortc import RTCRtpReceiver

from huddle.call import CallClient
from sfu import retransmit
from sfu.aiortc_glue import OutboundPort
from sfu.forwarder import Output, TrackForwarder
from sfu.retransmit import RepairPolicy
from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import Node, eventually, local_room
from tests.media import ColorTrack, ToneTrack
from tests.netem import (
    LossyRelay,
    candidate_ports,
    redirect_candidates,
    rtp_payload_type,
    rtp_sequence,
)

RTP_HEADER_BYTES = 32  # at most: 12 fixed, extensions, the RTX original sequence number


@dataclass
class Wire:
    """What the SFU sent the subscriber, seen by the relay (nothing is dropped)."""

    rtx_pt: int | None = None
    audio_pt: int | None = None
    rtx: int = 0
    audio_seqs: Counter[int] | None = None

    def watch(self, datagram: bytes) -> bool:
        pt = rtp_payload_type(datagram)
        if pt is not None and pt == self.rtx_pt:
            self.rtx += 1
        elif pt is not None and pt == self.audio_pt:
            assert self.audio_seqs is not None
            self.audio_seqs[rtp_sequence(datagram)] += 1
        return False


@dataclass
class Feed:
    """One track the subscriber gets: the SFU's side of it and the subscriber's receiver."""

    port: OutboundPort
    forwarder: TrackForwarder
    out: Output
    receiver: RTCRtpReceiver

    def recent(self, count: int) -> list[int]:
        """The outgoing numbers of the last ``count`` packets sent, newest first."""
        last = self.port.last_seq
        assert last is not None
        return [(last - i) & 0xFFFF for i in range(count)]

    def size(self, seq_out: int) -> int:
        kept = self.forwarder.history.get((seq_out - self.out.seq_offset) & 0xFFFF)
        assert kept is not None
        return len(kept[3]) + RTP_HEADER_BYTES

    async def nack(self, seqs: list[int]) -> None:
        """NACK ``seqs`` (given newest first, as ``recent`` gives them: oldest first on the
        wire, where the numbers may wrap)."""
        await self.receiver._send_rtcp_nack(self.port.ssrc, seqs[::-1])

    @property
    def answered(self) -> int:
        p = self.port
        return (
            p.retransmitted
            + p.retransmit_suppressed
            + p.retransmit_too_old
            + p.retransmit_over_budget
        )


@dataclass
class Call:
    node: Node
    bob: CallClient
    feeds: dict[str, Feed]

    async def stats(self) -> dict[str, p.SubscribedTrackStats]:
        """Bob's ``call.stats`` of what he receives, by kind."""
        reply = await self.bob.client.request(p.CallStats(id="", room=self.bob.room))
        return {t.kind: t for t in reply.subscribed}


@contextlib.asynccontextmanager
async def _call(start_node: StartNode, room: str, wire: Wire) -> AsyncIterator[Call]:
    node = await start_node(ice_addresses=["127.0.0.1"])
    alice = await node.call("alice", room)
    bob = await node.call("bob", room)
    relays: dict[int, int] = {}
    opened: list[LossyRelay] = []

    async def through_relay(kind: str, sdp: str) -> str:
        if kind != "offer":  # only the subscriber connection, from the SFU to bob
            return sdp
        rtx = re.search(r"a=fmtp:(\d+) apt=\d+", sdp)
        opus = re.search(r"a=rtpmap:(\d+) opus/48000", sdp)
        wire.rtx_pt = int(rtx.group(1)) if rtx else None
        wire.audio_pt = int(opus.group(1)) if opus else None
        for port in candidate_ports(sdp):
            if port not in relays:
                relay = LossyRelay(("127.0.0.1", port), wire.watch)
                opened.append(relay)
                relays[port] = await relay.start()
            sdp = redirect_candidates(sdp, port, relays[port])
        return sdp

    wire.audio_seqs = Counter()
    bob.remote_sdp_filter = through_relay
    await alice.publish(ColorTrack((40, 90, 200)), ToneTrack(440))
    for _ in range(2):
        await bob.next_track()
    sfu_room = local_room(node, room)
    subscriber = sfu_room.participants[bob.participant]
    assert bob.subscriber is not None
    receivers = {t.kind: t.receiver for t in bob.subscriber.getTransceivers()}
    # Every NACK comes from the test: a packet that loopback lost under load (a socket buffer
    # full) must not add retransmissions of its own to what is counted.
    setattr(receivers["video"], "_RTCRtpReceiver__nack_generator", None)  # noqa: B010
    feeds: dict[str, Feed] = {}
    for sub in subscriber.subscriptions.values():
        forwarder = sub.track.forwarder
        await eventually(lambda s=sub.port.ssrc, f=forwarder: s in f.outputs, 10)  # type: ignore[misc]
        feeds[sub.track.kind] = Feed(
            sub.port, forwarder, forwarder.outputs[sub.port.ssrc], receivers[sub.track.kind]
        )
    assert set(feeds) == {"audio", "video"}
    assert wire.rtx_pt is not None and wire.audio_pt is not None
    await eventually(lambda: all(f.port.packet_count > 60 for f in feeds.values()), 10)

    async def close() -> None:
        for call in (alice, bob):
            await call.close()
        for relay in opened:
            relay.close()

    try:
        yield Call(node, bob, feeds)
    finally:
        await close()


async def test_repeated_nacks_within_a_round_trip_get_one_retransmission(
    start_node: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A round trip of at least half a second (loopback's is a millisecond), packets playable
    # for three: the NACKs below all come within one round trip.
    monkeypatch.setattr(
        retransmit,
        "POLICY",
        RepairPolicy(rtt_floor_s=0.5, video_max_age_s=3.0, audio_max_age_s=3.0),
    )
    wire = Wire()
    async with _call(start_node, "rtx-once", wire) as call:
        video = call.feeds["video"]
        assert video.answered == 0 and wire.rtx == 0  # a clean path: nothing NACKed yet
        (seq,) = video.recent(1)
        for _ in range(5):
            await video.nack([seq])
        await eventually(lambda: video.answered == 5)
        await eventually(lambda: wire.rtx == 1)
        assert video.port.retransmitted == 1
        assert video.port.retransmit_suppressed == 4
        # Past the round trip, a NACK for it again is a new loss: answered once more.
        await asyncio.sleep(0.6)
        for _ in range(3):
            await video.nack([seq])
        await eventually(lambda: video.answered == 8)
        await eventually(lambda: wire.rtx == 2)
        await asyncio.sleep(0.1)
        assert (wire.rtx, video.port.retransmitted, video.port.retransmit_suppressed) == (2, 2, 6)
        stats = (await call.stats())["video"]
        assert (stats.retransmitted, stats.retransmit_suppressed) == (2, 6)
        assert stats.retransmit_too_old == stats.retransmit_over_budget == 0
        assert stats.retransmitted_bytes == video.port.retransmitted_bytes > 0


async def test_a_burst_beyond_the_budget_is_capped_and_audio_is_still_repaired(
    start_node: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bucket of 2,000 bytes that hardly refills (retransmissions get no share of the
    # estimate), half of it kept for audio.
    budget = 2_000
    monkeypatch.setattr(
        retransmit,
        "POLICY",
        RepairPolicy(
            rate_share=0.0,
            min_rate_bps=8,
            min_burst_bytes=budget,
            audio_reserve=0.5,
            video_max_age_s=20.0,
            audio_max_age_s=20.0,
        ),
    )
    wire = Wire()
    async with _call(start_node, "rtx-budget", wire) as call:
        video, audio = call.feeds["video"], call.feeds["audio"]
        # Video NACKs asking for three times what video may take.
        asked: list[int] = []
        for seq in video.recent(video.port.packet_count - 1):
            asked.append(seq)
            if sum(video.size(s) for s in asked) > 3 * budget // 2:
                break
        assert sum(video.size(s) for s in asked) > 3 * budget // 2
        await video.nack(asked)
        await eventually(lambda: video.answered == len(asked))
        assert video.port.retransmit_over_budget > 0
        assert 0 < video.port.retransmitted < len(asked)
        assert video.port.retransmitted_bytes <= budget // 2
        # Then audio NACKs, for as much as audio's half holds: every one is re-sent.
        wanted: list[int] = []
        for seq in audio.recent(audio.port.packet_count - 1):
            if sum(audio.size(s) for s in [*wanted, seq]) > budget // 2:
                break
            wanted.append(seq)
        assert len(wanted) >= 2
        await audio.nack(wanted)
        await eventually(lambda: audio.answered == len(wanted))
        assert audio.port.retransmitted == len(wanted)
        assert audio.port.retransmit_over_budget == 0
        # On the wire: as many RTX packets as video retransmissions, each audio packet twice.
        await eventually(lambda: wire.rtx == video.port.retransmitted)
        assert wire.audio_seqs is not None
        await eventually(lambda: all(wire.audio_seqs[s] == 2 for s in wanted))  # type: ignore[index]
        # More video now finds the bucket at audio's reserve: nothing more goes.
        before = video.port.retransmitted
        await video.nack(video.recent(3))
        await eventually(lambda: video.answered == len(asked) + 3)
        assert video.port.retransmitted == before
        # As call.stats and the metrics tell it.
        stats = await call.stats()
        assert stats["video"].retransmitted == before
        assert stats["video"].retransmit_over_budget == video.port.retransmit_over_budget > 0
        assert stats["video"].retransmitted_bytes <= budget // 2
        assert (stats["audio"].retransmitted, stats["audio"].retransmit_over_budget) == (
            len(wanted),
            0,
        )
        async with aiohttp.ClientSession() as http, http.get(f"{call.node.url}/metrics") as resp:
            text = await resp.text()
        over = f'huddle_sfu_room_retransmit_over_budget_total{{room="{call.bob.room}"}}'
        (line,) = [line for line in text.splitlines() if line.startswith(over)]
        assert float(line.rsplit(" ", 1)[1]) == video.port.retransmit_over_budget

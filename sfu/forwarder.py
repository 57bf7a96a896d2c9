"""RTP-level forwarding of one published track to its subscribers.

Per packet, work that is the same for every subscriber is done once: the packet is kept in
the track's history and serialized once per distinct header layout (payload type and
extension ids); each subscriber then only gets its own sequence number, timestamp and SSRC
patched into a copy, SRTP protection and a ``sendto``.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable
from typing import Final

from sfu.aiortc_glue import SEQ_TS_SSRC, OutboundPort, RtpPacket
from sfu.codecs import vp8_keyframe_start
from sfu.keyframes import RETRY_AFTER_S, KeyframeThrottle
from sfu.retransmit import RepairBudget, Verdict
from sfu.rtpwire import ntp_now, rtp_header

HISTORY_SIZE: Final = 1024  # ~1 s of 720p video: enough to answer NACKs
_RTX_OSN: Final = struct.Struct("!H")


# What a retransmission needs of a packet: (seq, timestamp, marker, payload, audio level,
# arrival time: its age decides whether it can still be played). A tuple of plain values,
# which the garbage collector stops tracking: a history of packet objects (thousands per
# room, each living a second) made full collections long enough to stall forwarding.
Kept = tuple[int, int, int, bytes, "tuple[bool, int] | None", float]


class PacketHistory:
    """The last ``size`` packets of a track by sequence number (a ring, no allocation)."""

    __slots__ = ("_ring", "_size")

    def __init__(self, size: int = HISTORY_SIZE) -> None:
        self._size = size
        self._ring: list[Kept | None] = [None] * size

    def put(self, packet: RtpPacket, arrived: float) -> None:
        self._ring[packet.sequence_number % self._size] = (
            packet.sequence_number,
            packet.timestamp,
            packet.marker,
            packet.payload,
            packet.extensions.audio_level,
            arrived,
        )

    def get(self, seq: int) -> Kept | None:
        kept = self._ring[seq % self._size]
        return kept if kept is not None and kept[0] == seq else None


class Output:
    """One subscriber's copy of a track: its numbering and its transport."""

    __slots__ = (
        "active",
        "bytes",
        "epoch_seq",
        "forwarded",
        "fraction_lost",
        "jitter",
        "last_owned",
        "on_start",
        "port",
        "seq_offset",
        "started",
        "ts_offset",
    )

    def __init__(self, port: OutboundPort, on_start: Callable[[], None] | None = None) -> None:
        self.port = port
        self.on_start = on_start  # called once, when the first packet goes out
        self.active = True  # False: paused by stream selection (not among the loudest...)
        self.started = False
        self.seq_offset = 0
        self.ts_offset = 0
        self.epoch_seq = 0  # first outgoing sequence number of the current run
        self.last_owned: int | None = None  # set when retired: the last number it sent
        self.forwarded = 0
        self.bytes = 0
        self.fraction_lost = 0  # of 256, from the subscriber's last receiver report
        self.jitter = 0  # in RTP clock units, from the same report

    def on_report(self, fraction_lost: int, jitter: int) -> None:
        self.fraction_lost = fraction_lost
        self.jitter = jitter

    def start(self, packet: RtpPacket, now: float, clock_rate: int) -> None:
        """Begin (or resume) with ``packet``: the sender's sequence numbers stay contiguous
        and its timestamps go on from where they stopped, whoever fed it before."""
        port = self.port
        first = random.getrandbits(15) if port.last_seq is None else (port.last_seq + 1) & 0xFFFF
        self.seq_offset = (first - packet.sequence_number) & 0xFFFF
        if port.last_ts is not None:
            elapsed = max(1, int((now - port.last_time) * clock_rate))
            self.ts_offset = (port.last_ts + elapsed - packet.timestamp) & 0xFFFFFFFF
        self.epoch_seq = first
        self.started = True
        if self.on_start is not None:
            callback, self.on_start = self.on_start, None
            callback()

    def pause(self) -> None:
        self.active = False
        self.started = False

    def owns(self, seq_out: int) -> bool:
        """True if ``seq_out`` was sent in the current run (older numbers map elsewhere)."""
        if not self.started:
            return False
        since = (seq_out - self.epoch_seq) & 0xFFFF
        if self.last_owned is not None:
            return since <= ((self.last_owned - self.epoch_seq) & 0xFFFF)
        return since < 0x8000


class TrackForwarder:
    """Forwards one published track (one SSRC) to any number of subscribers."""

    def __init__(
        self,
        kind: str,
        request_keyframe: Callable[[], None],
        *,
        now: Callable[[], float],
        later: Callable[[float, Callable[[], None]], object],
    ) -> None:
        self.kind = kind
        self.clock_rate = 90000 if kind == "video" else 48000
        self.history = PacketHistory()
        self.outputs: dict[int, Output] = {}
        self.packets_in = 0
        self.bytes_in = 0
        # Copies of packets it had already, left out of everything (``on_packet``).
        self.duplicates_in = 0
        self.keyframes_in = 0
        self.keyframe_requests = 0
        self.audio_level: int | None = None  # -dBov of the last packet (RFC 6464), 127 = silence
        self.paused = False  # muted by a room admin: nothing goes out
        self._request_keyframe = request_keyframe
        self._throttle = KeyframeThrottle()
        self._keyframe_pending = False
        self._waiting = 0  # outputs that have not had a key frame yet
        self._now = now
        self._later = later

    @classmethod
    def create(cls, kind: str, request_keyframe: Callable[[], None]) -> TrackForwarder:
        loop = asyncio.get_running_loop()
        return cls(kind, request_keyframe, now=time.monotonic, later=loop.call_later)

    def add(self, port: OutboundPort, on_start: Callable[[], None] | None = None) -> Output:
        out = Output(port, on_start)
        # A sender may be fed by two forwarders for a moment (a simulcast switch waiting
        # for its key frame): its RTCP goes to whichever feed it concerns.
        port.feeds.append((self, out))
        port.on_nack = lambda seqs: _route_nack(port, seqs)
        port.on_keyframe_request = lambda: _route_keyframe_request(port)
        port.on_report = lambda lost, jitter: _route_report(port, lost, jitter)
        self.outputs[port.ssrc] = out
        if self.kind == "video":
            # A new subscriber cannot decode until the next key frame: ask for one now.
            self._waiting += 1
            self.keyframe_wanted()
        return out

    def remove(self, port: OutboundPort) -> None:
        out = self.outputs.pop(port.ssrc, None)
        port.feeds = [(f, o) for f, o in port.feeds if o is not out]
        if out is not None and self.kind == "video" and out.active and not out.started:
            self._waiting -= 1

    def retire(self, port: OutboundPort) -> None:
        """Stop feeding ``port`` (another layer took over) but keep answering NACKs for what
        this output sent: a packet lost just before a switch must still be repaired, or
        the subscriber's jitter buffer waits on it."""
        out = self.outputs.pop(port.ssrc, None)
        if out is None:
            return
        if not out.started:
            if self.kind == "video" and out.active:
                self._waiting -= 1
            port.feeds = [(f, o) for f, o in port.feeds if o is not out]
            return
        out.last_owned = port.last_seq
        # One retired feed at a time: older numbers are long repaired or given up.
        port.feeds = [(f, o) for f, o in port.feeds if o.last_owned is None or o is out]

    def set_active(self, out: Output, active: bool) -> None:
        """Pause or resume one subscriber's copy (stream selection in large rooms)."""
        if active == out.active:
            return
        if not active:
            if self.kind == "video" and not out.started:
                self._waiting -= 1
            out.pause()
            return
        out.active = True
        if self.kind == "video":
            self._waiting += 1
            self.keyframe_wanted()

    def set_paused(self, paused: bool) -> None:
        """Stop or restart forwarding this track to everyone (video restarts at a key frame,
        each subscriber's numbering continuing where it stopped)."""
        if paused == self.paused:
            return
        self.paused = paused
        if paused or self.kind != "video":
            return
        for out in self.outputs.values():
            if out.active and out.started:
                out.started = False
                self._waiting += 1
        if self._waiting:
            self.keyframe_wanted()

    def keyframe_wanted(self) -> None:
        """Ask the publisher for a key frame: now, or as soon as the throttle allows."""
        if self._keyframe_pending:
            return
        now = self._now()
        delay = self._throttle.delay(now)
        if delay > 0:
            self._keyframe_pending = True
            self._later(delay, self._deferred_keyframe)
            return
        self._throttle.sent(now)
        self.keyframe_requests += 1
        self._request_keyframe()

    def _deferred_keyframe(self) -> None:
        self._keyframe_pending = False
        if self.outputs:
            self.keyframe_wanted()

    def on_packet(self, packet: RtpPacket) -> None:
        kept = self.history.get(packet.sequence_number)
        if kept is not None and kept[1] == packet.timestamp:
            # A copy of a packet already forwarded: Chromium pads and probes with RTX copies
            # of what it sent (9 in 10 packets of a layer, for seconds). Forwarded again
            # with the same number, the copy took the subscriber's downlink (1-1.4 Mbit/s
            # sent where its layers took 0.2), its SRTP dropped it as a replay before its
            # transport feedback saw it, so the copy's transport-wide number read as lost
            # (at 5 % loss each way: 50-70 %, every video held at its lowest layer), and it
            # counted in the layer's rate. A repair of a packet lost upstream still goes.
            self.duplicates_in += 1
            return
        self.packets_in += 1
        self.bytes_in += len(packet.payload)
        now = self._now()
        self.history.put(packet, now)
        level = packet.extensions.audio_level
        if level is not None:
            self.audio_level = level[1]
        keyframe = self.kind == "video" and vp8_keyframe_start(packet.payload)
        if keyframe:
            self.keyframes_in += 1
        if not self.outputs or self.paused:
            return
        if self._waiting and self._throttle.since_last(now) > RETRY_AFTER_S:
            self.keyframe_wanted()
        ntp = ntp_now()
        abs_send_time = (ntp >> 14) & 0x00FFFFFF
        bases: dict[int, bytes] = {}  # by header layout
        for out in self.outputs.values():
            if not out.active:
                continue
            port = out.port
            if not port.ready and not port.negotiated():
                continue
            if not out.started:
                if self.kind == "video":
                    if not keyframe:
                        continue
                    self._waiting -= 1
                out.start(packet, now, self.clock_rate)
            base = bases.get(port.layout_key)
            if base is None:
                base = bases[port.layout_key] = self._serialize(
                    packet.marker,
                    packet.payload,
                    packet.extensions.audio_level,
                    port,
                    abs_send_time,
                )
            ts = (packet.timestamp + out.ts_offset) & 0xFFFFFFFF
            seq = (packet.sequence_number + out.seq_offset) & 0xFFFF
            if port.forward(base, seq, ts, len(packet.payload), ntp, now):
                out.forwarded += 1
                out.bytes += len(base)

    @staticmethod
    def _serialize(
        marker: int,
        payload: bytes,
        audio_level: tuple[bool, int] | None,
        port: OutboundPort,
        abs_send_time: int,
    ) -> bytes:
        """The packet for ``port``'s header layout, sequence number, timestamp and SSRC left
        zero (each sender writes its own)."""
        payload_type, abs_send_time_id, audio_level_id, transport_seq_id = port.layout
        return (
            rtp_header(
                payload_type,
                marker,
                abs_send_time_id,
                abs_send_time,
                audio_level_id,
                audio_level,
                transport_seq_id,
            )
            + payload
        )

    def _on_nack(self, out: Output, seqs: list[int]) -> None:
        """Re-send what the subscriber asked for, as its ``RepairBudget`` allows (the only
        place it is consulted: forwarding itself never pays for it). Video waits for the
        event loop's next turn, so that audio NACKs that came with it (one compound RTCP
        packet, or datagrams read together) draw on the budget first."""
        if self.kind == "video":
            self._later(0.0, lambda: self._answer_nack(out, seqs))
        else:
            self._answer_nack(out, seqs)

    def _answer_nack(self, out: Output, seqs: list[int]) -> None:
        port = out.port
        if not out.started or not port.ready:
            return
        budget = port.repair
        if budget is None:
            budget = port.repair = RepairBudget(lambda: port.bytes_sent)
        now = self._now()
        budget.on_rtt(port.rtt_s)
        budget.refill(now)
        audio = self.kind == "audio"
        ntp = ntp_now()
        abs_send_time = (ntp >> 14) & 0x00FFFFFF
        for seq_out in seqs:
            if not out.owns(seq_out):
                continue
            kept = self.history.get((seq_out - out.seq_offset) & 0xFFFF)
            if kept is None:  # never reached the SFU (lost upstream), or long overwritten
                continue
            _, timestamp, marker, payload, audio_level, arrived = kept
            verdict = budget.screen(port.ssrc, seq_out, audio=audio, age_s=now - arrived, now=now)
            if verdict is Verdict.SEND:
                data = self._retransmission(
                    port,
                    seq_out,
                    timestamp + out.ts_offset,
                    marker,
                    payload,
                    audio_level,
                    abs_send_time,
                )
                verdict = budget.take(port.ssrc, seq_out, len(data), audio=audio, now=now)
                if verdict is Verdict.SEND:
                    if port.send(data) and port.rtx_payload_type is not None:
                        port.rtx_seq = (port.rtx_seq + 1) & 0xFFFF
                    continue
            if verdict is Verdict.DUPLICATE:
                port.retransmit_suppressed += 1
            elif verdict is Verdict.TOO_OLD:
                port.retransmit_too_old += 1
            else:
                port.retransmit_over_budget += 1

    def _retransmission(
        self,
        port: OutboundPort,
        seq_out: int,
        ts: int,
        marker: int,
        payload: bytes,
        audio_level: tuple[bool, int] | None,
        abs_send_time: int,
    ) -> bytes:
        """The packet that repairs ``seq_out``: itself again, or wrapped in the sender's RTX
        stream where one is negotiated (RFC 4588: RTX payload = original sequence number +
        original payload)."""
        ts &= 0xFFFFFFFF
        buf = bytearray(self._serialize(marker, payload, audio_level, port, abs_send_time))
        if port.rtx_payload_type is None:
            SEQ_TS_SSRC.pack_into(buf, 2, seq_out, ts, port.ssrc)
            return bytes(buf)
        header_len = len(buf) - len(payload)
        SEQ_TS_SSRC.pack_into(buf, 2, port.rtx_seq, ts, port.rtx_ssrc)
        buf[1] = (buf[1] & 0x80) | port.rtx_payload_type
        return bytes(buf[:header_len]) + _RTX_OSN.pack(seq_out) + payload


def _route_nack(port: OutboundPort, seqs: list[int]) -> None:
    for forwarder, out in list(port.feeds):
        mine = [seq for seq in seqs if out.owns(seq)]
        if mine:
            forwarder._on_nack(out, mine)


def _route_keyframe_request(port: OutboundPort) -> None:
    for forwarder, out in list(port.feeds):
        if out.active:
            forwarder.keyframe_wanted()


def _route_report(port: OutboundPort, fraction_lost: int, jitter: int) -> None:
    for _, out in port.feeds:
        out.on_report(fraction_lost, jitter)

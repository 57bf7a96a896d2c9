"""The forwarder's answer to a NACK, with the sender replaced by one that records what it is
given (the sending itself is aiortc's and tested with real peers in
tests/functional/test_retransmit_functional.py)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from aiortc.rtp import RtpPacket

from sfu.forwarder import TrackForwarder
from sfu.retransmit import RepairBudget, RepairPolicy

KEYFRAME = b"\x10\x00" + bytes(98)  # VP8: start of partition 0, P bit clear
DELTA = b"\x10\x01" + bytes(98)


class RecordingPort:
    """What the forwarder uses of an ``OutboundPort``; ``sent`` holds retransmissions."""

    def __init__(self, *, rtx: bool) -> None:
        self.ssrc = 1000
        self.rtx_ssrc = 2000
        self.rtx_payload_type: int | None = 97 if rtx else None
        self.rtx_seq = 500
        self.layout = (96, None, None, None)
        self.layout_key = 0
        self.ready = True
        self.last_seq: int | None = None
        self.last_ts: int | None = None
        self.last_time = 0.0
        self.feeds: list[tuple[Any, Any]] = []
        self.bytes_sent = 0
        self.rtt_s: float | None = 0.05
        self.repair: RepairBudget | None = None
        self.retransmitted = 0
        self.retransmit_suppressed = 0
        self.retransmit_too_old = 0
        self.retransmit_over_budget = 0
        self.up = True
        self.sent: list[bytes] = []
        self.on_nack: Callable[[list[int]], None] = lambda seqs: None
        self.on_keyframe_request: Callable[[], None] = lambda: None
        self.on_report: Callable[[int, int], None] = lambda lost, jitter: None

    def negotiated(self) -> bool:
        return True

    def forward(self, base: bytes, seq: int, ts: int, size: int, ntp: int, now: float) -> bool:
        self.last_seq, self.last_ts, self.last_time = seq, ts, now
        self.bytes_sent += len(base)
        return True

    def send(self, data: bytes) -> bool:
        if not self.up:
            return False
        self.sent.append(data)
        self.retransmitted += 1
        return True


class Clock:
    """The forwarder's clock and timers: what it defers runs when the test says."""

    def __init__(self) -> None:
        self.now = 100.0
        self.due: list[Callable[[], None]] = []

    def __call__(self) -> float:
        return self.now

    def later(self, delay: float, callback: Callable[[], None]) -> None:
        self.due.append(callback)

    def run(self) -> None:
        due, self.due = self.due, []
        for callback in due:
            callback()


def _forwarding(
    kind: str,
    port: RecordingPort,
    packets: int,
    policy: RepairPolicy | None = None,
    *,
    clock: Clock | None = None,
    budget: RepairBudget | None = None,
) -> tuple[TrackForwarder, Clock]:
    clock = clock or Clock()
    forwarder = TrackForwarder(kind, lambda: None, now=clock, later=clock.later)
    port.repair = budget or RepairBudget(lambda: port.bytes_sent, policy or RepairPolicy())
    forwarder.add(port)  # type: ignore[arg-type]
    for seq in range(packets):
        payload = KEYFRAME if seq == 0 else DELTA
        forwarder.on_packet(
            RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 3000, payload=payload)
        )
        clock.now += 0.01
    clock.run()
    return forwarder, clock


def _nack(port: RecordingPort, clock: Clock, seqs: list[int]) -> None:
    """A NACK arrives, and the event loop takes its next turn."""
    port.on_nack(seqs)
    clock.run()


def test_video_is_repaired_over_rtx_with_the_original_number_inside() -> None:
    port = RecordingPort(rtx=True)
    _, clock = _forwarding("video", port, 10)
    assert port.last_seq is not None
    first = (port.last_seq - 9) & 0xFFFF
    _nack(port, clock, [(first + 3) & 0xFFFF, (first + 4) & 0xFFFF])
    assert port.retransmitted == 2
    headers = [struct.unpack("!BBHII", data[:12]) for data in port.sent]
    assert [h[1] for h in headers] == [97, 97]  # RTX payload type
    assert [h[2] for h in headers] == [500, 501]  # the RTX stream's own numbers
    assert {h[4] for h in headers} == {2000}
    originals = [struct.unpack("!H", data[12:14])[0] for data in port.sent]
    assert originals == [(first + 3) & 0xFFFF, (first + 4) & 0xFFFF]
    assert port.sent[0][14:] == DELTA


def test_without_rtx_the_packet_goes_again_as_it_was() -> None:
    port = RecordingPort(rtx=False)
    _forwarding("audio", port, 10)
    assert port.last_seq is not None
    port.on_nack([port.last_seq])  # audio is answered at once
    (data,) = port.sent
    assert struct.unpack("!BBHII", data[:12])[1:3] == (96, port.last_seq)


def test_duplicates_old_packets_and_overspending_are_counted_apart() -> None:
    port = RecordingPort(rtx=True)
    policy = RepairPolicy(video_max_age_s=0.065, min_burst_bytes=500, min_rate_bps=8)
    _, clock = _forwarding("video", port, 10, policy)
    assert port.last_seq is not None
    last = port.last_seq
    _nack(port, clock, [last, last, (last - 9) & 0xFFFF])  # the last twice; the first is 100 ms old
    assert (port.retransmitted, port.retransmit_suppressed, port.retransmit_too_old) == (1, 1, 1)
    # 500 bytes, a quarter kept for audio: three of these 114-byte packets in all.
    _nack(port, clock, [(last - i) & 0xFFFF for i in range(1, 5)])
    assert port.retransmitted == 3
    assert port.retransmit_over_budget == 2
    # Numbers this sender never sent are not answered, nor counted.
    clock.now += 1
    _nack(port, clock, [(last + 100) & 0xFFFF])
    assert (port.retransmitted, port.retransmit_over_budget) == (3, 2)


def test_an_rtx_number_is_used_only_by_a_packet_that_went_out() -> None:
    port = RecordingPort(rtx=True)
    _, clock = _forwarding("video", port, 10)
    assert port.last_seq is not None
    port.up = False  # the transport is not up: nothing goes
    _nack(port, clock, [port.last_seq])
    assert port.rtx_seq == 500
    port.up = True
    _nack(port, clock, [(port.last_seq - 1) & 0xFFFF])
    assert port.rtx_seq == 501
    assert struct.unpack("!H", port.sent[0][2:4])[0] == 500


def test_audio_nacks_that_come_with_video_ones_are_answered_first() -> None:
    """One subscriber, one budget: its video NACK comes first in the compound RTCP packet,
    its audio NACK after it, and the budget holds less than both ask for."""
    clock = Clock()
    video, audio = RecordingPort(rtx=True), RecordingPort(rtx=False)
    audio.ssrc = 3000
    budget = RepairBudget(policy=RepairPolicy(min_burst_bytes=600, min_rate_bps=8, audio_reserve=0))
    _forwarding("video", video, 10, clock=clock, budget=budget)
    _forwarding("audio", audio, 10, clock=clock, budget=budget)
    assert video.last_seq is not None and audio.last_seq is not None
    video.on_nack([(video.last_seq - i) & 0xFFFF for i in range(5)])
    audio.on_nack([(audio.last_seq - i) & 0xFFFF for i in range(3)])
    clock.run()  # the loop's next turn
    # Three 112-byte audio packets, then video gets what is left: two of its 114 bytes.
    assert (audio.retransmitted, audio.retransmit_over_budget) == (3, 0)
    assert (video.retransmitted, video.retransmit_over_budget) == (2, 3)


def test_a_copy_of_a_packet_already_forwarded_is_not_forwarded_again() -> None:
    """Chromium pads and probes with RTX copies of packets it sent (unwrapped, they are the
    packets again): only a packet the SFU never had goes out, a repair of one lost on the
    way up included."""
    port = RecordingPort(rtx=True)
    clock = Clock()
    forwarder = TrackForwarder("video", lambda: None, now=clock, later=clock.later)
    port.repair = RepairBudget(lambda: port.bytes_sent)
    forwarder.add(port)  # type: ignore[arg-type]
    forwarded: list[int] = []
    forward = port.forward

    def recording(base: bytes, seq: int, ts: int, size: int, ntp: int, now: float) -> bool:
        forwarded.append(seq)
        return forward(base, seq, ts, size, ntp, now)

    port.forward = recording  # type: ignore[method-assign]

    def packet(seq: int) -> RtpPacket:
        payload = KEYFRAME if seq == 0 else DELTA
        return RtpPacket(
            payload_type=96, sequence_number=seq, timestamp=seq * 3000, payload=payload
        )

    for seq in [0, 1, 2, 3, 4, 6, 7, 8, 9]:  # 5 lost on the way up
        forwarder.on_packet(packet(seq))
    for seq in [7, 8, 9, 7, 5, 10]:  # padding copies, the repair of 5, the next packet
        forwarder.on_packet(packet(seq))
    assert len(forwarded) == 11
    assert len(set(forwarded)) == 11  # no number went out twice
    assert forwarder.duplicates_in == 4
    assert forwarder.packets_in == 11
    assert forwarder.bytes_in == 11 * len(DELTA)

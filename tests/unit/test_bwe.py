"""The SFU's own estimate of a subscriber's downlink from transport-wide feedback (sfu.bwe):
what it offers and reads in SDP, how it reads feedback, and what it estimates and probes on
a simulated link whose feedback goes through the real encoder (sfu.twcc.ArrivalLog)."""

from __future__ import annotations

import struct

import pytest

from sfu.aiortc_glue import split_transport_feedback
from sfu.bwe import LINK_SHARE, PROBE_MIN_BYTES, LossWindow, SendSideEstimator, probe_duration
from sfu.sdp import TRANSPORT_CC_ID, answered_transport_cc, offer_transport_cc
from sfu.twcc import EXTENSION_URI, FEEDBACK_TYPE, ArrivalLog, decode_feedback, encode_feedback

OFFER = "\r\n".join(
    [
        "v=0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=mid:0",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
        "a=rtpmap:111 opus/48000/2",
        "m=video 9 UDP/TLS/RTP/SAVPF 97 98",
        "a=mid:1",
        "a=rtpmap:97 VP8/90000",
        "a=rtcp-fb:97 goog-remb",
        "a=rtpmap:98 rtx/90000",
        "a=fmtp:98 apt=97",
        "",
    ]
)


def test_the_offer_gets_the_extension_in_each_section_and_feedback_on_each_codec_but_rtx() -> None:
    sdp = offer_transport_cc(OFFER, EXTENSION_URI, FEEDBACK_TYPE)
    lines = sdp.split("\r\n")
    assert lines.count(f"a=extmap:{TRANSPORT_CC_ID} {EXTENSION_URI}") == 2
    assert "a=rtcp-fb:111 transport-cc" in lines and "a=rtcp-fb:97 transport-cc" in lines
    assert "a=rtcp-fb:98 transport-cc" not in lines
    assert sdp.endswith("\r\n")  # nothing else moved
    assert [x for x in lines if "transport" not in x] == OFFER.split("\r\n")


def test_the_answer_says_which_sections_took_it_and_under_which_id() -> None:
    both = offer_transport_cc(OFFER, EXTENSION_URI, FEEDBACK_TYPE)
    assert answered_transport_cc(both, EXTENSION_URI, FEEDBACK_TYPE) == {"0": 5, "1": 5}
    # The extension without the feedback (or the other way round) is not taken.
    no_feedback = "\r\n".join(x for x in both.split("\r\n") if "111 transport-cc" not in x)
    assert answered_transport_cc(no_feedback, EXTENSION_URI, FEEDBACK_TYPE) == {"1": 5}
    assert answered_transport_cc(OFFER, EXTENSION_URI, FEEDBACK_TYPE) == {}
    renumbered = both.replace(f"a=extmap:{TRANSPORT_CC_ID} ", "a=extmap:7/sendrecv ")
    assert answered_transport_cc(renumbered, EXTENSION_URI, FEEDBACK_TYPE) == {"0": 7, "1": 7}
    # A number that is not ASCII digits: the extension is not taken (and nothing raises).
    odd = both.replace(f"a=extmap:{TRANSPORT_CC_ID} ", "a=extmap:\u00b2 ")
    assert answered_transport_cc(odd, EXTENSION_URI, FEEDBACK_TYPE) == {}


@pytest.mark.parametrize(
    "packet",
    [
        b"",
        b"\x8f\xcd\x00\x01",  # a header and no body
        bytes.fromhex("81cd000500000001000000020064000300000100a8000402"),  # FMT 1: a NACK
        bytes.fromhex("8fcd000600000001000000020064000300000100a8000402"),  # length lies
        bytes.fromhex("8fcd0004000000010000000200640030000001000000"),  # 48 statuses, no chunks
        bytes.fromhex("8fcd00040000000100000002006400030000010020030000"),  # deltas missing
    ],
)
def test_feedback_that_does_not_hold_together_is_refused(packet: bytes) -> None:
    with pytest.raises(ValueError):
        decode_feedback(packet)


def test_transport_feedback_is_taken_out_of_a_compound_packet_and_the_rest_goes_on() -> None:
    rr = struct.pack("!BBHI", 0x80, 201, 1, 42)  # an empty receiver report
    feedback = encode_feedback(1, 2, 100, [65_000, None, 65_500], 0)
    remb = struct.pack("!BBHII", 0x8F, 206, 2, 1, 0)
    taken: list[bytes] = []
    assert split_transport_feedback(rr + feedback + remb, taken.append) == rr + remb
    assert taken == [feedback]
    # A length past the end stops the walk: the rest goes on unread.
    assert split_transport_feedback(rr + feedback[:-4], taken.append) == rr + feedback[:-4]
    assert len(taken) == 1

    def broken(_: bytes) -> None:
        raise RuntimeError("a handler that fails")

    assert split_transport_feedback(feedback + rr, broken) == rr  # and nothing else stops


class Link:
    """A one-way bottleneck: packets queue behind each other at ``bps``, then take a fixed
    delay; what finds the queue longer than ``queue_s`` is dropped. Its receiver's feedback
    is made by the real encoder, every 50 ms."""

    def __init__(self, bps: float, queue_s: float = 0.5) -> None:
        self.bps = bps
        self.queue_s = queue_s
        self.free_at = 0.0
        self.arrivals = ArrivalLog(sender_ssrc=1)
        self.pending: list[tuple[float, int]] = []  # (arrival s, transport seq)

    def send(self, seq: int, size: int, now: float) -> None:
        start = max(now, self.free_at)
        if start - now > self.queue_s:
            return  # dropped
        self.free_at = start + size * 8 / self.bps
        self.pending.append((self.free_at + 0.02, seq))

    def feedback(self, now: float) -> list[bytes]:
        arrived = [p for p in self.pending if p[0] <= now]
        self.pending = [p for p in self.pending if p[0] > now]
        for at, seq in arrived:
            self.arrivals.record(seq, int(at * 1e6))
        return self.arrivals.feedback()


def run(
    bwe: SendSideEstimator,
    link: Link,
    media_bps: float,
    start: float,
    seconds: float,
    probe_bps: float | None = None,
) -> float:
    """Send ``media_bps`` in 1,000-byte packets (and a probe of ``probe_bps`` at the start,
    its padding spread as the SFU spreads it, ended with its last padding packet) through
    ``link`` for ``seconds``, feeding the feedback back. Returns when it ended."""
    now = start
    step = 0.005
    credit = 0.0
    padding: list[float] = []
    if probe_bps is not None:
        duration = bwe.start_probe(probe_bps, now)
        count = int(probe_bps * duration / (295 * 8)) + 1
        padding = [now + i * duration / count for i in range(count)]
    next_feedback = now + 0.05
    while now < start + seconds:
        credit += media_bps * step / 8
        while credit >= 1000:
            credit -= 1000
            link.send(bwe.sent(1000, now), 1000, now)
        while padding and padding[0] <= now:
            padding.pop(0)
            link.send(bwe.sent(295, now), 295, now)
            if not padding:
                bwe.end_probe(now)
        if now >= next_feedback:
            next_feedback += 0.05
            for packet in link.feedback(now):
                bwe.on_feedback(decode_feedback(packet), now)
        now += step
    return now


def test_the_estimate_falls_to_what_a_short_link_carries() -> None:
    bwe = SendSideEstimator(start_bps=1_000_000, first_seq=65_000)  # numbers wrap meanwhile
    link = Link(bps=300_000)
    run(bwe, link, media_bps=800_000, start=100.0, seconds=8.0)
    # From 1 Mbit/s to around the link (rate control probes a little above it, and falls
    # back to 0.85 of what arrived at each overuse).
    assert bwe.estimate_bps is not None
    assert 0.5 * link.bps < bwe.estimate_bps < 1.4 * link.bps, bwe.estimate_bps
    received, lost = bwe.take_loss()
    assert received > 0 and lost > 0  # the queue overflowed: losses are counted
    assert bwe.take_loss() == (0, 0)


def test_a_probe_on_a_free_link_raises_the_estimate_at_once() -> None:
    bwe = SendSideEstimator(start_bps=100_000)
    link = Link(bps=5_000_000)
    now = run(bwe, link, media_bps=80_000, start=0.0, seconds=3.0)
    before = bwe.estimate_bps
    assert before is not None and before < 200_000  # it cannot grow past what it sends
    run(bwe, link, media_bps=80_000, start=now, seconds=0.5, probe_bps=600_000)
    assert bwe.last_probe is not None and bwe.last_probe.carried_bps is not None
    assert bwe.estimate_bps is not None and 450_000 < bwe.estimate_bps < 750_000, bwe.last_probe
    assert bwe.probes == 1 and not bwe.probing


def test_a_probe_on_a_short_link_measures_the_link_not_the_probe() -> None:
    bwe = SendSideEstimator(start_bps=100_000)
    link = Link(bps=150_000)
    now = run(bwe, link, media_bps=60_000, start=0.0, seconds=3.0)
    run(bwe, link, media_bps=60_000, start=now, seconds=1.0, probe_bps=600_000)
    assert bwe.last_probe is not None and bwe.last_probe.carried_bps is not None
    assert bwe.last_probe.carried_bps < 200_000, bwe.last_probe
    assert bwe.estimate_bps is not None and bwe.estimate_bps < 200_000


def test_a_repeated_feedback_is_not_counted_twice() -> None:
    bwe = SendSideEstimator(start_bps=300_000)
    for i in range(10):
        bwe.sent(500, i * 0.01)
    packet = encode_feedback(1, 2, 0, [i * 10_000 for i in range(10)], 0)
    bwe.on_feedback(decode_feedback(packet), 0.2)
    bwe.on_feedback(decode_feedback(packet), 0.3)
    assert bwe.take_loss() == (10, 0)
    # Numbers never sent (or long forgotten) are ignored.
    bwe.on_feedback(decode_feedback(encode_feedback(1, 2, 30_000, [0, None], 1)), 0.4)
    assert bwe.take_loss() == (0, 0)


def test_a_probe_lasts_long_enough_to_carry_its_bytes() -> None:
    assert probe_duration(10_000_000) == pytest.approx(0.06)
    assert probe_duration(400_000) == pytest.approx(PROBE_MIN_BYTES * 8 / 400_000)
    assert probe_duration(50_000) == pytest.approx(0.2)
    assert probe_duration(0) == pytest.approx(0.2)


def test_a_probe_keeps_to_its_rate_whatever_media_it_carries() -> None:
    bwe = SendSideEstimator(start_bps=100_000)
    duration = bwe.start_probe(400_000, 10.0)
    total = int(400_000 * duration / 8)
    assert bwe.probe_bytes_due(10.0) == 0
    assert bwe.probe_bytes_due(10.0 + duration / 2) == pytest.approx(total / 2, abs=1)
    # Media sent within the probe counts toward it: a frame's burst leaves less to pad...
    bwe.sent(1_000, 10.0 + duration / 4)
    assert bwe.probe_bytes_due(10.0 + duration / 2) == pytest.approx(total / 2 - 1_000, abs=1)
    # ... and a burst above the rate leaves none; past its duration, what is due stays.
    bwe.sent(total, 10.0 + duration / 2)
    assert bwe.probe_bytes_due(10.0 + duration) == 0
    assert bwe.probe_bytes_due(10.0 + 3 * duration) == 0
    bwe.end_probe(10.0 + duration)
    assert bwe.probe_bytes_due(10.0 + duration) == 0  # no probe under way


def test_a_probe_padded_to_its_rate_raises_the_estimate_between_large_frames() -> None:
    """A screen share's lowest layer: five large frames a second. Padding sized from that
    average left probes carrying half their rate when they fell between frames."""
    bwe = SendSideEstimator(start_bps=100_000)
    link = Link(bps=5_000_000)
    now = 0.0
    next_feedback = 0.05
    frame_at = 0.0
    probe_at = 2.02  # between two frames
    while now < 3.0:
        if now >= frame_at:
            for _ in range(6):  # 6 kB a frame: 240 kbit/s
                link.send(bwe.sent(1_000, now), 1_000, now)
            frame_at += 0.2
        if probe_at <= now and not bwe.probing and bwe.probes == 0:
            duration = bwe.start_probe(600_000, now)
            probe_end = now + duration
        if bwe.probing:
            while bwe.probe_bytes_due(now) > 0:
                link.send(bwe.sent(295, now), 295, now)
            if now >= probe_end:
                bwe.end_probe(now)
        if now >= next_feedback:
            next_feedback += 0.05
            for packet in link.feedback(now):
                bwe.on_feedback(decode_feedback(packet), now)
        now += 0.005
    assert bwe.last_probe is not None and bwe.last_probe.carried_bps is not None
    assert bwe.last_probe.carried_bps > 0.8 * 600_000, bwe.last_probe
    assert bwe.estimate_bps is not None and bwe.estimate_bps > 0.8 * 600_000


def _probe_then_burst(bwe: SendSideEstimator) -> tuple[float, int]:
    """Media at under half a 400 kbit/s link, a probe above it, then a burst (a resumed
    video's key frame, 0.8 s of the link) that queues: what the probe carried, and the
    lowest estimate over the next 2 s."""
    link = Link(bps=400_000, queue_s=1.0)
    now = run(bwe, link, media_bps=180_000, start=0.0, seconds=4.0)
    now = run(bwe, link, media_bps=180_000, start=now, seconds=1.0, probe_bps=600_000)
    assert bwe.last_probe is not None and bwe.last_probe.carried_bps is not None
    for _ in range(40):
        link.send(bwe.sent(1_000, now), 1_000, now)
    lowest = bwe.estimate_bps or 0
    end = now + 2.0
    while now < end:
        now = run(bwe, link, media_bps=180_000, start=now, seconds=0.1)
        lowest = min(lowest, bwe.estimate_bps or 0)
    return bwe.last_probe.carried_bps, lowest


def test_an_overuse_after_a_probe_lowers_the_estimate_to_what_the_probe_carried_not_below(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    carried, lowest = _probe_then_burst(SendSideEstimator(start_bps=300_000))
    assert 300_000 < carried < 480_000
    assert lowest >= int(LINK_SHARE * carried) - 1, (lowest, carried)
    # Without that memory, rate control alone takes it to 0.85 times what arrived lately.
    monkeypatch.setattr("sfu.bwe.LINK_MEMORY_S", -1.0)
    carried, lowest = _probe_then_burst(SendSideEstimator(start_bps=300_000))
    assert lowest < 0.9 * LINK_SHARE * carried, (lowest, carried)


def test_losses_are_this_links_alone_and_a_probes_padding_is_left_out() -> None:
    bwe = SendSideEstimator(start_bps=300_000)
    for i in range(20):  # media: two of twenty lost
        bwe.sent(1_000, i * 0.01)
    bwe.start_probe(1_000_000, 0.2)
    for i in range(10):  # a probe's padding, half of it lost to a short link
        bwe.sent(295, 0.2 + i * 0.005)
    bwe.end_probe(0.25)
    arrivals: list[int | None] = [i * 10_000 for i in range(30)]
    for k in (3, 11, *range(20, 30, 2)):
        arrivals[k] = None
    bwe.on_feedback(decode_feedback(encode_feedback(1, 2, 0, arrivals, 0)), 0.4)
    assert bwe.take_loss() == (18, 2)


def test_losses_are_read_over_a_window_of_enough_packets() -> None:
    window = LossWindow(window_s=1.0, min_packets=20)
    assert window.add(9, 1, 0.0) is None  # too soon
    assert window.add(5, 0, 1.2) is None  # too few: 15 packets
    assert window.add(4, 1, 1.4) == pytest.approx(2 / 20)
    assert window.add(50, 0, 1.5) is None  # a new window began at 1.4
    assert window.add(0, 0, 2.4) == 0.0

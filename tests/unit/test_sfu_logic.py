"""Pure decisions of the forwarding path: key frames, throttling, sequence continuity."""

from __future__ import annotations

import gc

from sfu.aiortc_glue import RtpPacket
from sfu.codecs import vp8_keyframe_start
from sfu.forwarder import Output, PacketHistory
from sfu.keyframes import KeyframeThrottle


def test_vp8_keyframe_start() -> None:
    # S=1, PID=0, no extension; VP8 header P bit 0 -> key frame.
    assert vp8_keyframe_start(bytes([0x10, 0x00, 0x9D, 0x01, 0x2A]))
    # Same but P bit 1: inter frame.
    assert not vp8_keyframe_start(bytes([0x10, 0x01]))
    # Not the start of a partition.
    assert not vp8_keyframe_start(bytes([0x00, 0x00]))
    # Partition index 1.
    assert not vp8_keyframe_start(bytes([0x11, 0x00]))
    # Extension with a 15-bit picture id, TL0PICIDX and TID bytes before the header.
    assert vp8_keyframe_start(bytes([0x90, 0xE0, 0x80, 0x01, 0x05, 0x20, 0x00]))
    assert not vp8_keyframe_start(bytes([0x90, 0xE0, 0x80, 0x01, 0x05, 0x20, 0x01]))
    # Truncated payloads are not key frames, never errors.
    for short in (b"", bytes([0x90]), bytes([0x90, 0x80]), bytes([0x10])):
        assert not vp8_keyframe_start(short)


def test_keyframe_throttle_defers() -> None:
    throttle = KeyframeThrottle(interval=0.5)
    assert throttle.delay(10.0) == 0.0
    throttle.sent(10.0)
    assert abs(throttle.delay(10.1) - 0.4) < 1e-9
    assert throttle.delay(10.6) == 0.0
    assert throttle.since_last(11.0) == 1.0


def _packet(seq: int) -> RtpPacket:
    return RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 10, ssrc=1)


def test_history_ring_returns_only_exact_sequence() -> None:
    history = PacketHistory(size=8)
    for seq in range(20):
        history.put(_packet(seq), seq / 100)
    kept = history.get(19)
    assert kept is not None and kept[:2] == (19, 190)
    assert history.get(3) is None  # overwritten by 11 and 19


def test_history_keeps_plain_values_the_collector_stops_tracking() -> None:
    history = PacketHistory(size=8)
    packet = _packet(5)
    packet.payload = b"\x10\x00payload"
    history.put(packet, 12.5)
    kept = history.get(5)
    assert kept == (5, 50, 0, b"\x10\x00payload", None, 12.5)
    gc.collect()
    assert not gc.is_tracked(kept)  # a history of packets is no work for full collections


class _Port:
    ssrc = 1234
    last_seq: int | None = None
    last_ts: int | None = None
    last_time = 0.0


def test_output_resumes_contiguously_and_forgets_old_numbers() -> None:
    port = _Port()
    out = Output(port)  # type: ignore[arg-type]
    out.start(_packet(65530), 10.0, 90000)
    first = out.epoch_seq
    assert out.ts_offset == 0  # nothing was sent on this port before: timestamps as they are
    port.last_seq, port.last_ts, port.last_time = (first + 9) & 0xFFFF, 5000, 10.3
    assert out.owns((first + 5) & 0xFFFF)
    out.pause()
    assert not out.active and not out.started
    out.active = True
    out.start(_packet(100), 11.3, 90000)  # resumed much later in the publisher's numbering
    assert out.epoch_seq == (first + 10) & 0xFFFF
    assert (100 + out.seq_offset) & 0xFFFF == (first + 10) & 0xFFFF
    # Timestamps go on from the last one sent, one second (90,000 ticks) later.
    assert (100 * 10 + out.ts_offset) & 0xFFFFFFFF == 5000 + 90000
    # NACKs for numbers sent before the pause no longer map into the history.
    assert not out.owns((first + 5) & 0xFFFF)
    assert out.owns((first + 11) & 0xFFFF)


def test_a_new_feed_of_the_same_sender_continues_its_numbers() -> None:
    """A switch of simulcast layer: another forwarder's output on the same port."""
    port = _Port()
    started: list[str] = []
    low = Output(port)  # type: ignore[arg-type]
    low.start(_packet(7000), 1.0, 90000)
    port.last_seq, port.last_ts, port.last_time = (low.epoch_seq + 50) & 0xFFFF, 123456, 2.0
    high = Output(port, on_start=lambda: started.append("high"))  # type: ignore[arg-type]
    high.start(_packet(30000), 2.1, 90000)
    assert started == ["high"]
    assert high.epoch_seq == (low.epoch_seq + 51) & 0xFFFF
    assert (30000 * 10 + high.ts_offset) & 0xFFFFFFFF == 123456 + 9000


def test_announce_rewrites_only_mapped_candidate_addresses() -> None:
    from sfu.sdp import announce

    sdp = (
        "v=0\r\na=candidate:1 1 udp 2130706431 10.0.0.5 41000 typ host\r\n"
        "a=candidate:2 1 udp 2130706431 192.168.1.9 41001 typ host\r\n"
        "a=ice-ufrag:10.0.0.5\r\n"
    )
    out = announce(sdp, {"10.0.0.5": "203.0.113.7"})
    assert "203.0.113.7 41000 typ host" in out
    assert "192.168.1.9 41001 typ host" in out  # not mapped: left alone
    assert "a=ice-ufrag:10.0.0.5" in out  # only candidate lines change
    assert announce(sdp, {}) == sdp


def test_ice_settings_validated() -> None:
    import pytest
    from pydantic import ValidationError

    from huddle.config import Settings

    with pytest.raises(ValidationError, match="ice_addresses"):
        Settings(ice_announced_address="203.0.113.7")
    with pytest.raises(ValidationError, match="ice_port_min"):
        Settings(ice_port_min=5000)
    with pytest.raises(ValidationError, match="ice_port_min"):
        Settings(ice_port_min=6000, ice_port_max=5000)
    s = Settings(ice_addresses="10.0.0.5, 10.0.0.6", ice_announced_address="203.0.113.7")
    assert s.ice_addresses == ["10.0.0.5", "10.0.0.6"]
    assert s.ice_announced == {"10.0.0.5": "203.0.113.7", "10.0.0.6": "203.0.113.7"}


def test_ntp_now_matches_aiortc_clock() -> None:
    from aiortc import clock

    from sfu.rtpwire import ntp_now

    ours, theirs = ntp_now(), clock.current_ntp_time()
    assert abs(ours - theirs) < 2**32 // 100  # within 10 ms


def test_keep_codecs_leaves_only_the_forwarded_codec_and_its_repair() -> None:
    from sfu.sdp import keep_codecs

    offer = "\r\n".join(
        [
            "v=0",
            "m=video 9 UDP/TLS/RTP/SAVPF 99 100 97 98",
            "a=mid:0",
            "a=rtpmap:99 H264/90000",
            "a=fmtp:99 packetization-mode=1",
            "a=rtpmap:100 rtx/90000",
            "a=fmtp:100 apt=99",
            "a=rtpmap:97 VP8/90000",
            "a=rtcp-fb:97 nack pli",
            "a=rtpmap:98 rtx/90000",
            "a=fmtp:98 apt=97",
            "m=audio 9 UDP/TLS/RTP/SAVPF 0 111",
            "a=mid:1",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:111 opus/48000/2",
            "",
        ]
    )
    out = keep_codecs(offer, {"video": "VP8", "audio": "opus"}).split("\r\n")
    assert "m=video 9 UDP/TLS/RTP/SAVPF 97 98" in out
    assert "m=audio 9 UDP/TLS/RTP/SAVPF 111" in out
    assert not [line for line in out if "H264" in line or "apt=99" in line or "PCMU" in line]
    assert "a=rtcp-fb:97 nack pli" in out and "a=fmtp:98 apt=97" in out
    assert "a=mid:1" in out
    # A section without the codec is left alone (the caller refuses it).
    h264_only = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 99\r\na=rtpmap:99 H264/90000\r\n"
    assert keep_codecs(h264_only, {"video": "VP8"}) == h264_only


def test_a_retired_feed_still_owns_what_it_sent_and_nothing_after() -> None:
    port = _Port()
    old = Output(port)  # type: ignore[arg-type]
    old.start(_packet(100), 1.0, 90000)
    first = old.epoch_seq
    old.last_owned = (first + 20) & 0xFFFF  # retired after sending 21 packets
    assert old.owns(first) and old.owns((first + 20) & 0xFFFF)
    assert not old.owns((first + 21) & 0xFFFF)  # the new layer's numbers
    assert not old.owns((first - 1) & 0xFFFF)

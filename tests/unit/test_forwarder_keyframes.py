"""When the forwarder asks a publisher for a key frame, and which key frame starts a new
subscriber (the sender replaced by one that records what it is given; the same with real
peers and browsers: tests/functional/test_call_functional.py, tests/browser)."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from sfu.forwarder import TrackForwarder
from sfu.keyframes import JOIN_INTERVAL_S, MIN_INTERVAL_S
from tests.unit.test_forwarder_nack import DELTA, KEYFRAME, Clock, RecordingPort


def _video(clock: Clock, requests: list[float]) -> TrackForwarder:
    return TrackForwarder(
        "video", lambda: requests.append(round(clock.now, 6)), now=clock, later=clock.later
    )


def _packet(seq: int, payload: bytes) -> RtpPacket:
    return RtpPacket(payload_type=96, sequence_number=seq, timestamp=seq * 3000, payload=payload)


def _port(ssrc: int) -> RecordingPort:
    port = RecordingPort(rtx=True)
    port.ssrc = ssrc
    return port


def _last_sent(port: RecordingPort) -> int | None:
    """The number of the last packet forwarded to ``port`` (None: nothing yet)."""
    return port.last_seq


def test_a_key_frame_before_the_subscribers_connection_is_up_does_not_start_it() -> None:
    clock, requests = Clock(), list[float]()
    forwarder = _video(clock, requests)
    port = _port(1000)
    port.up = False  # answered, DTLS not done yet
    forwarder.add(port)  # type: ignore[arg-type]
    assert requests == []  # a key frame now could not reach it
    forwarder.on_packet(_packet(0, KEYFRAME))
    forwarder.on_packet(_packet(1, DELTA))
    # Started on that key frame, the subscriber would get the frames after it and nothing
    # it can decode until it asked for a key frame itself.
    assert _last_sent(port) is None

    port.up = True
    forwarder.connected(port)  # type: ignore[arg-type]
    assert requests == [100.0]
    forwarder.on_packet(_packet(2, DELTA))
    assert _last_sent(port) is None
    forwarder.on_packet(_packet(3, KEYFRAME))
    first = _last_sent(port)
    assert first is not None
    forwarder.on_packet(_packet(4, DELTA))
    assert _last_sent(port) == (first + 1) & 0xFFFF

    # Connected again (a restart): nothing more is asked for one already started.
    forwarder.connected(port)  # type: ignore[arg-type]
    assert requests == [100.0]


def test_a_subscriber_that_joins_soon_after_a_request_waits_less_than_a_repeated_one() -> None:
    clock, requests = Clock(), list[float]()
    forwarder = _video(clock, requests)
    forwarder.add(_port(1000))  # type: ignore[arg-type]
    assert requests == [100.0]
    forwarder.on_packet(_packet(0, KEYFRAME))

    clock.now = 100.05
    forwarder.add(_port(1001))  # type: ignore[arg-type]
    assert requests == [100.0]  # deferred...
    clock.now = 100.0 + JOIN_INTERVAL_S
    clock.run()
    assert requests == [100.0, 100.0 + JOIN_INTERVAL_S]  # ...by the join interval only

    # A subscriber's own request (loss) keeps the longer spacing.
    clock.now = 100.3
    forwarder.keyframe_wanted()
    clock.now = 100.0 + JOIN_INTERVAL_S + MIN_INTERVAL_S
    clock.run()
    assert requests[-1] == round(100.0 + JOIN_INTERVAL_S + MIN_INTERVAL_S, 6)
    assert len(requests) == 3


def test_a_join_brings_a_deferred_request_forward_and_one_request_serves_both() -> None:
    clock, requests = Clock(), list[float]()
    forwarder = _video(clock, requests)
    forwarder.add(_port(1000))  # type: ignore[arg-type]
    forwarder.on_packet(_packet(0, KEYFRAME))
    clock.now = 100.1
    forwarder.keyframe_wanted()  # due at 100.5
    clock.now = 100.12
    forwarder.add(_port(1001))  # type: ignore[arg-type]  # due at 100.2: sooner
    clock.now = 100.0 + JOIN_INTERVAL_S
    clock.run()  # both timers run: the superseded one sends nothing
    assert requests == [100.0, 100.0 + JOIN_INTERVAL_S]
    clock.now = 101.0
    clock.run()
    assert len(requests) == 2

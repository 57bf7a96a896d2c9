"""What the SFU tells about itself, as plain structs: ICE servers for clients and per-track
statistics. The signaling protocol carries them as they are (``signaling.protocol``
re-exports them); the SFU imports nothing of the protocol.
"""

from __future__ import annotations

import msgspec


class IceServer(msgspec.Struct, kw_only=True, omit_defaults=True):
    """As in RTCIceServer: TURN entries carry time-limited credentials."""

    urls: list[str]
    username: str | None = None
    credential: str | None = None


class PublishedTrackStats(msgspec.Struct, kw_only=True):
    track: str
    kind: str
    source: str
    packets: int
    bytes: int
    bitrate_bps: int
    packets_lost: int
    keyframes: int
    keyframe_requests: int
    subscribers: int
    # Copies of packets the SFU had already (a browser's padding probes): not forwarded.
    duplicates: int = 0


class SubscribedTrackStats(msgspec.Struct, kw_only=True):
    track: str
    kind: str
    participant: str
    packets: int
    bytes: int
    retransmitted: int
    bitrate_bps: int
    fraction_lost: float
    jitter: int
    rtt_ms: float | None
    active: bool
    # Simulcast: the quality (0 lowest) and height of the layer forwarded now.
    layer: int | None = None
    height: int | None = None
    # The subscriber's latest bandwidth estimate: its REMB, or the SFU's own.
    estimate_bps: int | None = None
    # NACKed packets: bytes re-sent (RTX header included), and those not re-sent because one
    # went less than a round trip ago, because they were too old to be played, or because
    # the subscriber's retransmission budget was spent. Every layer it was fed counts.
    retransmitted_bytes: int = 0
    retransmit_suppressed: int = 0
    retransmit_too_old: int = 0
    retransmit_over_budget: int = 0
    # Not sent now because the participant's downlink has no room for it (sfu.paused).
    downlink_paused: bool = False
    # The SFU's estimate of the participant's downlink (REMB, loss, a start value), the same
    # for each of its tracks; what it is sent stays under it. None: unlimited (it sends no
    # REMB and loses nothing).
    downlink_bps: int | None = None
    # Where ``estimate_bps`` comes from: "remb" (the subscriber's own), "transport-cc" (the
    # SFU's, from its transport-wide feedback, sfu.bwe), None before either; and the
    # padding probes sent to the participant so far.
    estimator: str | None = None
    probes: int = 0

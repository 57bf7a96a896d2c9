"""Per-track statistics of a room, for the socket (``call.stats``) and for /metrics."""

from __future__ import annotations

from dataclasses import dataclass, field

from sfu.room import Participant, Room
from sfu.types import PublishedTrackStats, SubscribedTrackStats


def bitrate_bps(start_bytes: int, total_bytes: int, elapsed: float) -> int:
    """Bits per second of a byte counter read at ``start_bytes`` and, ``elapsed`` seconds
    later, at ``total_bytes``. Never negative: a counter that went back was replaced by a new
    one (it should not be, but a rate below zero would only mislead), counted from zero."""
    if elapsed <= 0:
        return 0
    grown = total_bytes - start_bytes if total_bytes >= start_bytes else total_bytes
    return int(grown * 8 / elapsed)


@dataclass
class RateMeter:
    """Bits per second between successive readings of a byte counter."""

    _last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def rate(self, key: str, total_bytes: int, now: float, since: float) -> int:
        previous = self._last.get(key)
        self._last[key] = (now, total_bytes)
        start_time, start_bytes = previous if previous else (since, 0)
        return bitrate_bps(start_bytes, total_bytes, now - start_time)

    def forget(self, prefix: str) -> None:
        for key in [k for k in self._last if k.startswith(prefix)]:
            del self._last[key]


def published(participant: Participant, meter: RateMeter, now: float) -> list[PublishedTrackStats]:
    out = []
    for track in participant.published.values():
        f = track.forwarder
        out.append(
            PublishedTrackStats(
                track=track.key,
                kind=track.kind,
                source=track.source,
                packets=f.packets_in,
                bytes=f.bytes_in,
                bitrate_bps=meter.rate("in:" + track.key, f.bytes_in, now, track.started),
                packets_lost=track.tap.packets_lost,
                keyframes=f.keyframes_in,
                keyframe_requests=f.keyframe_requests,
                subscribers=len(f.outputs),
                duplicates=f.duplicates_in,
            )
        )
    return out


def subscribed(
    participant: Participant, meter: RateMeter, now: float
) -> list[SubscribedTrackStats]:
    out = []
    downlink = participant.downlink.bps(now)
    bwe = participant.bwe
    estimator = "transport-cc" if bwe is not None else None
    for key, sub in participant.subscriptions.items():
        o = sub.track.forwarder.outputs.get(sub.port.ssrc)
        if o is None:
            continue
        port = sub.port
        rtt = port.rtt_s
        if bwe is None and port.remb_bps is not None:
            estimator = "remb"
        out.append(
            SubscribedTrackStats(
                track=key,
                kind=sub.track.kind,
                participant=sub.track.owner.id,
                # The sender's counters, not the layer's output's: a simulcast switch feeds
                # the same sender from another layer, whose output starts from zero.
                packets=port.packet_count,
                bytes=port.bytes_sent,
                retransmitted=port.retransmitted,
                bitrate_bps=meter.rate(
                    f"out:{participant.id}:{key}", port.bytes_sent, now, sub.started
                ),
                fraction_lost=round(o.fraction_lost / 256, 4),
                jitter=o.jitter,
                rtt_ms=None if rtt is None else round(rtt * 1000, 1),
                active=o.active,
                layer=sub.track.quality if sub.layers else None,
                height=sub.track.height if sub.layers else None,
                estimate_bps=bwe.estimate_bps if bwe is not None else port.remb_bps,
                retransmitted_bytes=port.retransmitted_bytes,
                retransmit_suppressed=port.retransmit_suppressed,
                retransmit_too_old=port.retransmit_too_old,
                retransmit_over_budget=port.retransmit_over_budget,
                downlink_paused=sub.downlink_paused,
                downlink_bps=downlink,
                estimator=estimator,
                probes=bwe.probes if bwe is not None else 0,
            )
        )
    return out


def room_totals(room: Room) -> dict[str, int]:
    totals = dict.fromkeys(
        (
            "participants",
            "tracks",
            "outputs",
            "packets_in",
            "bytes_in",
            "duplicates_in",
            "packets_forwarded",
            "bytes_forwarded",
            "retransmitted",
            "retransmit_suppressed",
            "retransmit_too_old",
            "retransmit_over_budget",
            "keyframe_requests",
            "packets_lost",
        ),
        0,
    )
    totals["participants"] = len(room.participants)
    for participant in room.participants.values():
        for track in participant.published.values():
            f = track.forwarder
            totals["tracks"] += 1
            totals["packets_in"] += f.packets_in
            totals["bytes_in"] += f.bytes_in
            totals["duplicates_in"] += f.duplicates_in
            totals["keyframe_requests"] += f.keyframe_requests
            totals["packets_lost"] += track.tap.packets_lost
            for o in f.outputs.values():
                totals["outputs"] += 1
                totals["packets_forwarded"] += o.forwarded
                totals["bytes_forwarded"] += o.bytes
        # Per sender, not per layer's output: they count every layer a subscriber was fed.
        for sub in participant.subscriptions.values():
            port = sub.port
            totals["retransmitted"] += port.retransmitted
            totals["retransmit_suppressed"] += port.retransmit_suppressed
            totals["retransmit_too_old"] += port.retransmit_too_old
            totals["retransmit_over_budget"] += port.retransmit_over_budget
    return totals

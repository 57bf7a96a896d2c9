"""Send-side bandwidth estimation toward one subscriber, from its transport-wide congestion
control feedback (``sfu.twcc``). Pure: no I/O, the clock is passed in.

A browser that answered the SFU's offer with the transport-wide sequence number extension
and ``transport-cc`` feedback stops estimating for itself (no more REMB): it reports when
each packet arrived, and the SFU estimates. The SFU numbers every packet it sends on the
subscriber's transport (``SendSideEstimator.sent``: media, retransmissions and probes; a few
array stores per packet), and each feedback packet is matched to what was sent:

- the delay trend: each reported packet goes, with its send time (as abs-send-time) and its
  arrival time, through the same delay-based estimator that receivers run for REMB
  (aiortc's ``RemoteBitrateEstimator``: inter-arrival groups, the overuse detector, AIMD
  rate control that never rises above 1.5 times what arrived plus 10 kbit/s);
- probes: the one thing a receiver-side estimate cannot do. An estimate held down by what
  the SFU chose to send (video paused on a short link, and the link is free again) grows
  only as fast as what is sent grows. ``start_probe`` marks every packet sent for the next
  ``probe_duration`` as one cluster, and the SFU fills it with padding up to the rate it
  wants to know about; when the feedback reports the cluster, what it carried is the lower
  of its send rate and the rate its second half arrived at (the first may have ridden a
  rate limiter's bucket), and an estimate below that is raised to it at once.
  A probe that the link cannot take says so too (``last_probe``). What a probe carried
  stays the floor of any decrease for ``LINK_MEMORY_S``: rate control alone falls to 0.85
  times what arrived over the last second, far below the link when less was being sent.

Losses, from the feedback, are counted (``take_loss``): what of the packets the SFU sent
arrived, the loss of this downlink alone (a receiver report's fraction lost also counts what
the publisher's uplink lost before the SFU had it). Packets sent within a probe are left out:
a probe above a short link loses padding by design.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Final

from aiortc.rate import RemoteBitrateEstimator

from sfu.twcc import Feedback

RING: Final = 4096  # packets remembered for their feedback (~4 s at 1,000 packets/s)
_MASK: Final = RING - 1
# How long a probe cluster lasts: long enough to carry ``PROBE_MIN_BYTES`` at its rate (a
# rate limiter's bucket lets a short burst through at line rate: a 2 KB probe measured
# 290 kbit/s through a 150 kbit/s cap), within these bounds.
PROBE_MIN_S: Final = 0.06
PROBE_MAX_S: Final = 0.2
PROBE_MIN_BYTES: Final = 4_000
PROBE_MIN_PACKETS: Final = 5
PROBE_MIN_RECEIVED: Final = 0.8  # the share of a cluster that must arrive for a result
PROBE_TIMEOUT_S: Final = 1.5  # a cluster not reported by then has failed
# A cluster's receive rate below this share of its send rate: the link queued it, and what
# it carried is a little below what arrived.
PROBE_QUEUED: Final = 0.9
PROBE_QUEUED_SHARE: Final = 0.95
# What a probe carried is what the link carries, for this long: an overuse meanwhile (the
# queue the probe itself left, a resumed video's key frame) lowers the estimate to
# ``LINK_SHARE`` of it at the least, not to 0.85 times what arrived over the last second
# (measured: a screen share sent at 200 kbit/s on a 400 kbit/s link, a probe, the estimate
# from 297 to 184 kbit/s and the screen paused).
LINK_MEMORY_S: Final = 5.0
LINK_SHARE: Final = 0.85
_ABS_SEND_TIME_UNITS: Final = 1 << 18  # 6.18 fixed-point seconds
_REFERENCE_WRAP_US: Final = (1 << 24) * 64_000


@dataclass
class _Cluster:
    target_bps: float
    started: float
    ended: float
    duration: float
    sent: int = 0
    sent_bytes: int = 0  # media, retransmissions and padding alike
    reported: int = 0
    # (send time s, arrival µs, bytes) of the packets that arrived
    arrived: list[tuple[float, int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class ProbeResult:
    target_bps: float
    carried_bps: float | None  # None: too little of it arrived to tell


@dataclass
class LossWindow:
    """Losses (``SendSideEstimator.take_loss``) read as one fraction over at least
    ``window_s`` and ``min_packets``: a few packets say little."""

    window_s: float
    min_packets: int
    since: float | None = None
    received: int = 0
    lost: int = 0

    def add(self, received: int, lost: int, now: float) -> float | None:
        """Count ``received`` and ``lost``; the fraction lost once the window is full."""
        if self.since is None:
            self.since = now
        self.received += received
        self.lost += lost
        total = self.received + self.lost
        if now - self.since < self.window_s or total < self.min_packets:
            return None
        fraction = self.lost / total
        self.since, self.received, self.lost = now, 0, 0
        return fraction


def probe_duration(target_bps: float) -> float:
    if target_bps <= 0:
        return PROBE_MAX_S
    return min(PROBE_MAX_S, max(PROBE_MIN_S, PROBE_MIN_BYTES * 8 / target_bps))


class SendSideEstimator:
    """One subscriber transport's packets and the estimate from their feedback."""

    def __init__(self, start_bps: int, first_seq: int = 0) -> None:
        self.start_bps = start_bps
        self._next = first_seq & 0xFFFF
        self._seqs = array("l", [-1]) * RING
        self._sent_at = array("d", [0.0]) * RING
        self._size = array("l", [0]) * RING
        self._cluster = array("l", [-1]) * RING
        self._estimator = RemoteBitrateEstimator()
        self._started = False
        self._last_arrival_ms = 0
        self._reference_shift = 0  # whole wraps of the receiver's reference time
        self._last_arrival_us: int | None = None
        self.estimate_bps: int | None = None
        self.received = 0
        self.lost = 0
        self._loss_mark = (0, 0)
        self._clusters: dict[int, _Cluster] = {}
        self._cluster_ids = 0
        self._probing = -1  # the cluster packets sent now belong to
        self._probe_until = 0.0
        self.last_probe: ProbeResult | None = None
        self.probes = 0
        self._link: tuple[float, float] | None = None  # (when, bps) the last probe carried

    def sent(self, size: int, now: float) -> int:
        """Number a packet of ``size`` bytes sent at ``now``: its transport-wide sequence
        number (16 bits)."""
        seq = self._next
        self._next = (seq + 1) & 0xFFFF
        i = seq & _MASK
        self._seqs[i] = seq
        self._sent_at[i] = now
        self._size[i] = size
        cluster = self._probing
        if cluster >= 0:
            if now < self._probe_until:
                probe = self._clusters[cluster]
                probe.sent += 1
                probe.sent_bytes += size
            else:
                cluster = self._probing = -1
        self._cluster[i] = cluster
        return seq

    @property
    def probing(self) -> bool:
        return self._probing >= 0

    def start_probe(self, target_bps: float, now: float) -> float:
        """Every packet sent from now until ``end_probe`` belongs to a probe of
        ``target_bps`` (the caller fills it up to that rate with padding for
        ``probe_duration(target_bps)``, returned). A probe never ended lasts twice that."""
        duration = probe_duration(target_bps)
        self._cluster_ids += 1
        self._probing = self._cluster_ids
        self._probe_until = now + 2 * duration
        self._clusters[self._probing] = _Cluster(target_bps, now, now + 2 * duration, duration)
        self.probes += 1
        return duration

    def probe_bytes_due(self, now: float) -> int:
        """Bytes of padding the probe under way needs by ``now`` to keep to its rate, over
        what was sent in it meanwhile (media counts: a screen's few large frames a second
        come in bursts, and padding sized from their average rate left probes of 400 kbit/s
        carrying 230, too little to raise the estimate on a link free again)."""
        cluster = self._clusters.get(self._probing)
        if cluster is None:
            return 0
        elapsed = min(max(0.0, now - cluster.started), cluster.duration)
        return max(0, int(cluster.target_bps * elapsed / 8) - cluster.sent_bytes)

    def end_probe(self, now: float) -> None:
        """The probe under way is complete: packets sent from now on are not part of it."""
        cluster = self._clusters.get(self._probing)
        if cluster is not None:
            cluster.ended = now
        self._probing = -1

    def on_feedback(self, feedback: Feedback, now: float) -> bool:
        """Match one feedback packet to what was sent. True when the estimate changed."""
        estimator = self._estimator
        before = self.estimate_bps
        base = feedback.base_seq
        arrival_ms = self._last_arrival_ms
        for k, arrival in enumerate(feedback.arrivals):
            seq = (base + k) & 0xFFFF
            i = seq & _MASK
            if self._seqs[i] != seq:
                continue  # never sent, or reported already (a repeated feedback)
            self._seqs[i] = -1
            cluster = self._clusters.get(self._cluster[i]) if self._cluster[i] >= 0 else None
            if cluster is not None:
                cluster.reported += 1
            if arrival is None:
                if cluster is None:
                    self.lost += 1
                continue
            if cluster is None:
                self.received += 1
            arrival = self._unwrap(arrival)
            arrival_ms = arrival // 1000
            sent_at = self._sent_at[i]
            size = self._size[i]
            if cluster is not None:
                cluster.arrived.append((sent_at, arrival, size))
            if not self._started:
                # Initialised at the start rate, as a receiver's REMB would be taken.
                estimator.rate_control.set_estimate(self.start_bps, arrival_ms)
                self.estimate_bps = self.start_bps
                self._started = True
            abs_send_time = int(sent_at * _ABS_SEND_TIME_UNITS) & 0xFFFFFF
            update = estimator.add(arrival_ms, abs_send_time, size, 0)
            if update is not None:
                estimate = update[0]
                floor = self._link_floor(now)
                if estimate < floor and (self.estimate_bps or 0) > estimate:
                    estimate = floor
                    estimator.rate_control.set_estimate(floor, arrival_ms)
                self.estimate_bps = estimate
        self._last_arrival_ms = arrival_ms
        self._judge_probes(now)
        return self.estimate_bps != before

    def take_loss(self) -> tuple[int, int]:
        """(received, lost) since the last call."""
        received, lost = self.received - self._loss_mark[0], self.lost - self._loss_mark[1]
        self._loss_mark = (self.received, self.lost)
        return received, lost

    def _unwrap(self, arrival_us: int) -> int:
        arrival_us += self._reference_shift
        last = self._last_arrival_us
        if last is not None and arrival_us < last - _REFERENCE_WRAP_US // 2:
            self._reference_shift += _REFERENCE_WRAP_US
            arrival_us += _REFERENCE_WRAP_US
        self._last_arrival_us = arrival_us
        return arrival_us

    def _judge_probes(self, now: float) -> None:
        for key, cluster in list(self._clusters.items()):
            if key == self._probing and now < self._probe_until:
                continue
            done = cluster.reported >= cluster.sent
            if not done and now - cluster.ended < PROBE_TIMEOUT_S:
                continue
            del self._clusters[key]
            carried = self._carried(cluster)
            self.last_probe = ProbeResult(cluster.target_bps, carried)
            if carried is not None:
                self._link = (now, carried)
            if carried is not None and (self.estimate_bps is None or carried > self.estimate_bps):
                self._estimator.rate_control.set_estimate(int(carried), self._last_arrival_ms)
                self.estimate_bps = int(carried)

    def _link_floor(self, now: float) -> int:
        """The least a decrease may go to now (``LINK_MEMORY_S``)."""
        link = self._link
        if link is None or now - link[0] > LINK_MEMORY_S:
            return 0
        return int(LINK_SHARE * link[1])

    @staticmethod
    def _carried(cluster: _Cluster) -> float | None:
        """What a cluster carried: the lower of its send rate (over the bytes before its
        last packet) and the rate its second half arrived at (the bytes after the first
        packet of that half); below what was sent when the link queued it."""
        arrived = cluster.arrived
        if len(arrived) < PROBE_MIN_PACKETS or len(arrived) < PROBE_MIN_RECEIVED * cluster.sent:
            return None
        by_send = sorted(arrived)
        send_span = by_send[-1][0] - by_send[0][0]
        later = sorted(arrived, key=lambda a: a[1])[len(arrived) // 2 :]
        receive_span = (later[-1][1] - later[0][1]) / 1e6
        if send_span <= 0 or receive_span <= 0:
            return None
        send_bps = (sum(a[2] for a in arrived) - by_send[-1][2]) * 8 / send_span
        receive_bps = sum(a[2] for a in later[1:]) * 8 / receive_span
        if receive_bps < PROBE_QUEUED * send_bps:
            return PROBE_QUEUED_SHARE * receive_bps
        return min(send_bps, receive_bps)

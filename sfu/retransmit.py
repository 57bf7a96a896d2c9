"""Which NACKed packets a subscriber gets again: at most once per round trip, never once they
are too old to be played, and within a share of its downlink.

Answering every NACK in full turns loss on a short link into more loss: each retransmission
takes room the media needed, which loses more, which is NACKed again (measured: five to
seven times more retransmissions than forwarded packets at a 1.5 Mbit/s cap, video frozen
most of the time, audio concealed). One ``RepairBudget`` per subscriber (shared by every
track it receives) decides each requested packet; it is consulted only when a NACK arrives,
so the forwarding path pays nothing for it.

The rules, in the order they are applied:
1. Too old: a packet that reached the SFU more than ``max_age`` ago (per kind: video waits
   longer in a receiver's buffer than audio) would come too late to be played.
2. Duplicate: a packet re-sent to this subscriber less than one round trip ago is still on
   its way; a NACK repeated meanwhile is suppressed. The round trip is the subscriber's (from
   its receiver reports), at least ``rtt_floor_s``, ``rtt_default_s`` until one is known.
3. Over budget: retransmissions draw on a token bucket. It fills at ``rate_share`` of the
   subscriber's bandwidth estimate (REMB), but never beyond what the estimate leaves once
   the media it is sent is counted; with no estimate, at ``rate_share`` of the media rate
   it is sent (measured from its senders' byte counters). Never below ``min_rate_bps``, so
   that audio can always be repaired. The bucket holds ``burst_s`` of that rate (at least
   ``min_burst_bytes``). Video may not draw it below ``audio_reserve`` of its size: what is
   left is audio's, so a burst of video NACKs never starves audio repair (and the forwarder
   answers video NACKs a loop turn later, so that audio NACKs that came with them go first).
What is counted is the whole retransmitted RTP packet, RTX header included.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class RepairPolicy:
    video_max_age_s: float = 0.5
    audio_max_age_s: float = 0.15
    rtt_default_s: float = 0.1
    rtt_floor_s: float = 0.02
    rate_share: float = 0.2
    min_rate_bps: int = 64_000
    burst_s: float = 0.2
    min_burst_bytes: int = 3_000
    audio_reserve: float = 0.25
    # The media rate is measured over at least this long (NACKs may come in quick bursts).
    rate_window_s: float = 0.25


# The policy every budget uses unless given one (read when a budget is made: tests shorten it).
POLICY = RepairPolicy()
# Sent times are forgotten once a packet that old would be refused as too old anyway.
_PRUNE_EVERY_S: Final = 1.0


class Verdict(enum.Enum):
    SEND = "send"
    DUPLICATE = "duplicate"
    TOO_OLD = "too_old"
    OVER_BUDGET = "over_budget"


def _no_media() -> int:
    return 0


class RepairBudget:
    """One subscriber's retransmissions. ``media_bytes`` reads the total bytes of media sent
    to it so far (every track, retransmissions aside)."""

    def __init__(
        self,
        media_bytes: Callable[[], int] = _no_media,
        policy: RepairPolicy | None = None,
    ) -> None:
        self.policy = policy if policy is not None else POLICY
        self._media_bytes = media_bytes
        self.estimate_bps: int | None = None  # the subscriber's latest REMB
        self.rtt_s: float | None = None
        self.media_bps: float | None = None
        self._rate_from: tuple[float, int] | None = None  # (when, media bytes) measured from
        self._tokens = 0.0
        self._filled: float | None = None  # when the bucket was last filled
        self._sent: dict[tuple[int, int], float] = {}  # (ssrc, seq) -> when re-sent
        self._pruned = 0.0

    # --- what is known of the subscriber ---------------------------------------------

    def on_estimate(self, bps: int) -> None:
        self.estimate_bps = bps

    def on_rtt(self, rtt_s: float | None) -> None:
        if rtt_s is not None:
            self.rtt_s = rtt_s

    @property
    def resend_interval_s(self) -> float:
        rtt = self.rtt_s if self.rtt_s is not None else self.policy.rtt_default_s
        return max(self.policy.rtt_floor_s, rtt)

    @property
    def rate_bps(self) -> float:
        """How fast the bucket fills now."""
        p = self.policy
        media = self.media_bps
        if self.estimate_bps is not None:
            rate = p.rate_share * self.estimate_bps
            if media is not None:
                rate = min(rate, self.estimate_bps - media)
        elif media is not None:
            rate = p.rate_share * media
        else:
            rate = 0.0
        return max(float(p.min_rate_bps), rate)

    @property
    def capacity_bytes(self) -> float:
        return max(float(self.policy.min_burst_bytes), self.rate_bps / 8 * self.policy.burst_s)

    @property
    def tokens(self) -> float:
        return self._tokens

    # --- deciding -------------------------------------------------------------------

    def refill(self, now: float) -> None:
        """Bring the media rate and the bucket up to ``now`` (once per NACK, before
        ``screen``/``take``)."""
        if self._rate_from is None:
            self._rate_from = (now, self._media_bytes())
        elif now - self._rate_from[0] >= self.policy.rate_window_s:
            # Read only this often: it sums the counters of every track the subscriber gets.
            since, start = self._rate_from
            media = self._media_bytes()
            self.media_bps = max(0, media - start) * 8 / (now - since)
            self._rate_from = (now, media)
        capacity = self.capacity_bytes
        if self._filled is None:
            self._tokens = capacity  # a first loss is repaired in full, up to one burst
        else:
            self._tokens += self.rate_bps / 8 * max(0.0, now - self._filled)
        self._tokens = min(self._tokens, capacity)
        self._filled = now
        if now - self._pruned >= _PRUNE_EVERY_S:
            self._pruned = now
            horizon = max(self.policy.video_max_age_s, self.policy.audio_max_age_s)
            self._sent = {k: t for k, t in self._sent.items() if now - t <= horizon}

    def screen(self, ssrc: int, seq: int, *, audio: bool, age_s: float, now: float) -> Verdict:
        """The verdict on re-sending packet ``seq`` of sender ``ssrc`` (which arrived
        ``age_s`` ago), before its size matters: SEND means it may go if ``take`` agrees."""
        p = self.policy
        if age_s > (p.audio_max_age_s if audio else p.video_max_age_s):
            return Verdict.TOO_OLD
        last = self._sent.get((ssrc, seq))
        if last is not None and now - last < self.resend_interval_s:
            return Verdict.DUPLICATE
        return Verdict.SEND

    def take(self, ssrc: int, seq: int, size: int, *, audio: bool, now: float) -> Verdict:
        """Spend ``size`` bytes on re-sending ``seq`` of ``ssrc`` (SEND: it goes now, and
        counts as sent for duplicates), or OVER_BUDGET."""
        floor = 0.0 if audio else self.policy.audio_reserve * self.capacity_bytes
        if self._tokens - size < floor:
            return Verdict.OVER_BUDGET
        self._tokens -= size
        self._sent[(ssrc, seq)] = now
        return Verdict.SEND

"""Each subscriber's downlink: how much it can take (``DownlinkEstimate``) and what of the
room it is sent within that (``allocate``, ``Allocator``). Pure: no I/O, the clock is passed in.

The estimate comes from what the subscriber reports:
- a delay-based estimate: the SFU's own (``sfu.bwe``, from transport-wide feedback, which
  browsers send when they accept the extension the SFU offers; ``padding`` set), or else
  the subscriber's REMB (a client that does not, such as aiortc: the receiver's own
  estimate), both taken by ``on_remb``;
- loss, from its receiver reports, as a second signal: smoothed loss above ``loss_high``
  (10 %) lowers a loss cap to the media rate sent times (1 - loss/2), at most once per
  ``loss_interval_s``; below ``loss_low`` (2 %) the cap grows by ``loss_growth`` per interval
  and is dropped once it is above the REMB. Loss lowers layers but never pauses video by
  itself (random loss is no sign of a short link; the REMB says when the link is short);
- ``start_bps`` until the first REMB; a subscriber that sent none within ``start_s`` of its
  first allocation does not estimate (a bot, a client without congestion control): its
  downlink is taken as unlimited, but for loss;
- a REMB that stopped coming (a receiver estimates only from video, and all its video may be
  paused) grows by ``stale_growth`` per second once it is ``stale_after_s`` old, so that
  paused video is tried again.

The allocation, recomputed on a timer (never per packet): audio first, always kept; then
every video at its lowest layer, by priority; then upgrades, the most important stream
first as far as it fits, all within ``(1 - repair_share)`` of the estimate (the rest is the
retransmission budget's, ``sfu.retransmit``, which never spends beyond what the estimate
leaves beside the media). A video whose lowest layer does not fit is paused, with every
video of lower priority. What is sent is kept while it fits the whole estimate: a drop comes
only when it does not, to what fits it.

``Allocator`` applies it with hysteresis: a drop (a lower layer, a pause) at once; a rise one
layer of one stream at a time, at most every ``step_s``, and not within ``hold_s`` of a drop
(doubled after each drop that follows a rise within ``probe_window_s`` while the estimate
stayed where it was, and after each failed probe, up to ``max_hold_s``, so that a stream
whose next layer costs more than measured does not flap). A drop right after a rise takes
the stream that rose; the others keep at least their lowest layer for ``probe_window_s``
unless loss is high (a resume's key frame can queue on a short link, and the estimate then
falls for a moment below what was sent there all along).

A receiver's estimator never says more than it can measure: libwebrtc's and aiortc's rate
control raise a REMB no further than 1.5 times what arrived plus 10 kbit/s. An estimate at
or above that ceiling (or a stale one) cannot grow by itself, and a layer that does not fit
it would never be tried: the allocator then probes, taking one layer above what fits for
``probe_window_s``; it keeps it if the REMB rose meanwhile (the ceiling moved with what
arrived) and drops it otherwise. With every video paused the REMB says nothing at all (a
browser estimates from video, and repeats its last value meanwhile): the allocator probes
then too, unless there is loss, and judges that probe from the lowest REMB within it (the
resumed key frame may read as a queue to the receiver), not from the one it started with.

With the SFU's own estimate none of that is needed: a probe is padding (``probe_bps``, sent
by the caller), which raises the estimate at once when the link carries it and costs the
picture nothing when it does not; layers then rise by the rules above.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final


@dataclass(frozen=True)
class DownlinkPolicy:
    start_bps: int = 1_000_000
    start_s: float = 2.0
    # A browser's first REMBs come from an estimator that has measured little yet (Chromium's
    # starts low and rises with what it receives): for this long after the estimate is first
    # read they lower layers but do not pause video (``delay_value`` stays at ``start_bps``).
    # Without it, video was paused for participants on a free link in their first seconds.
    startup_s: float = 6.0
    min_bps: int = 30_000
    loss_high: float = 0.10
    loss_low: float = 0.02
    loss_smoothing: float = 0.6  # weight of the newest loss reading
    loss_interval_s: float = 1.0
    loss_growth: float = 1.3
    stale_after_s: float = 2.0
    stale_growth: float = 1.25  # per second
    repair_share: float = 0.2
    step_s: float = 1.0
    hold_s: float = 2.0
    max_hold_s: float = 16.0
    probe_window_s: float = 3.0
    # A REMB above this share of the receiver's own ceiling (1.5 x received + 10 kbit/s)
    # is taken as held by it.
    ceiling_tolerance: float = 0.1
    probe: bool = True
    # With the SFU's own estimate (sfu.bwe) a probe is padding, not media: it costs the
    # subscriber's picture nothing, so it is tried whenever something does not fit (its
    # rate control grows by 8 % a second at best: measured, 310 to 430 kbit/s in the 11 s
    # after a cap was lifted), every ``padding_probe_s`` (doubled after each that did not
    # raise the estimate, up to ``max_padding_probe_s``: a short link is not flooded), at
    # ``probe_margin`` times what the next layer up needs, and at most ``probe_growth``
    # times the estimate (a probe far above the link would queue its audio).
    padding_probe_s: float = 1.0
    max_padding_probe_s: float = 2.0
    probe_margin: float = 1.25
    probe_growth: float = 2.0


# The policy every subscriber uses unless given one (read when one is made: tests change it).
POLICY = DownlinkPolicy()
CEILING_FACTOR: Final = 1.5
CEILING_EXTRA_BPS: Final = 10_000


@dataclass
class DownlinkEstimate:
    """What one subscriber can receive, in bits per second (``value``)."""

    policy: DownlinkPolicy = field(default_factory=lambda: POLICY)
    remb_bps: int | None = None
    remb_at: float = 0.0
    loss: float = 0.0  # smoothed fraction of packets lost
    loss_cap_bps: float | None = None
    _loss_acted: float = -math.inf
    started: float | None = None  # when it was first read
    # The estimate is the SFU's own (sfu.bwe), which can be probed with padding.
    padding: bool = False

    def unknown(self, now: float) -> bool:
        """True for a subscriber that sends no REMB (none ``start_s`` after it was first
        read)."""
        if self.started is None:
            self.started = now
        return self.remb_bps is None and now - self.started >= self.policy.start_s

    def bps(self, now: float) -> int | None:
        """``value`` in whole bits per second; None while it is unlimited."""
        value = self.value(now)
        return None if math.isinf(value) else int(value)

    def on_remb(self, bps: int, now: float) -> None:
        self.remb_bps = bps
        self.remb_at = now
        if self.loss_cap_bps is not None and self.loss_cap_bps >= bps:
            self.loss_cap_bps = None

    def on_loss(self, fraction: float, sent_bps: float, now: float) -> None:
        """``fraction`` of the packets sent was lost by the subscriber's latest receiver
        reports; ``sent_bps`` is what it was sent meanwhile."""
        p = self.policy
        self.loss = (1 - p.loss_smoothing) * self.loss + p.loss_smoothing * fraction
        if now - self._loss_acted < p.loss_interval_s:
            return
        if self.loss > p.loss_high:
            self._loss_acted = now
            base = min(self._base(now), sent_bps) if sent_bps > 0 else self._base(now)
            if math.isinf(base):
                return  # nothing sent to measure by, and no estimate to lower
            cap = base * (1 - self.loss / 2)
            if self.loss_cap_bps is None or cap < self.loss_cap_bps:
                self.loss_cap_bps = cap
        elif self.loss < p.loss_low and self.loss_cap_bps is not None:
            self._loss_acted = now
            self.loss_cap_bps *= p.loss_growth
            if self.remb_bps is not None and self.loss_cap_bps >= self.remb_bps:
                self.loss_cap_bps = None

    def stale(self, now: float) -> bool:
        """No REMB, or none for ``stale_after_s``."""
        return self.remb_bps is None or now - self.remb_at > self.policy.stale_after_s

    def _base(self, now: float) -> float:
        p = self.policy
        if self.remb_bps is None:
            return math.inf if self.unknown(now) else float(p.start_bps)
        late = now - self.remb_at - p.stale_after_s
        remb = float(self.remb_bps)
        if late > 0:
            remb *= p.stale_growth ** min(late, 60.0)
        return remb

    def value(self, now: float) -> float:
        base = self._base(now)
        if self.loss_cap_bps is not None:
            base = min(base, self.loss_cap_bps)
        return max(float(self.policy.min_bps), base)

    def delay_value(self, now: float) -> float:
        """The estimate without the loss cap: what decides whether video is paused."""
        p = self.policy
        base = self._base(now)
        if self.started is not None and now - self.started < p.startup_s:
            base = max(base, float(p.start_bps))
        return max(float(p.min_bps), base)

    def at_ceiling(self, received_bps: float, now: float) -> bool:
        """True if the estimate cannot grow by itself: it is stale, or at (or above) the
        receiver's own ceiling for ``received_bps``, and there is no loss."""
        if self.loss > self.policy.loss_low or self.loss_cap_bps is not None:
            return False
        if self.unknown(now):
            return False  # nothing to probe: it is not limited
        if self.stale(now):
            return True
        assert self.remb_bps is not None
        ceiling = CEILING_FACTOR * received_bps + CEILING_EXTRA_BPS
        return self.remb_bps >= (1 - self.policy.ceiling_tolerance) * ceiling


# A stream's priority is its tier (screen shares, then pinned participants, then the rest)
# times this, plus its rank within the tier (how recently its owner spoke).
TIER: Final = 1000


@dataclass(frozen=True)
class Stream:
    """One track a subscriber may get. ``rates``: the bitrate of each layer it may be sent,
    lowest first (one for a plain track, those within its tile size for simulcast).
    ``priority``: smaller is more important (``TIER``)."""

    key: str
    kind: str
    rates: tuple[float, ...]
    priority: float = 0.0


Allocation = dict[str, int | None]  # layer index by stream key; None: paused


def allocate(
    streams: Sequence[Stream],
    budget_bps: float,
    keep_bps: float | None = None,
    sent: Collection[str] = (),
) -> Allocation:
    """What fits ``budget_bps``: every audio; each video at its lowest layer in priority
    order until one does not fit ``keep_bps`` (default: the budget; it and the rest are
    paused); then each kept video, the most important first, raised as far as what is left
    of ``budget_bps`` allows. Within a tier, the videos in ``sent`` (being sent now) come
    before the paused ones: a change in who spoke last must not swap a paused video for one
    being sent (measured: a video resumed and paused again every 2.5 s, two speakers
    taking turns, on a downlink with room for one)."""
    result: Allocation = {}
    audio = sum(s.rates[0] for s in streams if s.kind == "audio")
    result.update({s.key: 0 for s in streams if s.kind == "audio"})
    left = (budget_bps if keep_bps is None else max(budget_bps, keep_bps)) - audio
    videos = sorted(
        (s for s in streams if s.kind != "audio"),
        key=lambda s: (s.priority // TIER, s.key not in sent, s.priority),
    )
    kept: list[Stream] = []
    for i, s in enumerate(videos):
        if s.rates[0] > left:
            result.update(dict.fromkeys((v.key for v in videos[i:]), None))
            break
        result[s.key] = 0
        left -= s.rates[0]
        kept.append(s)
    left = budget_bps - audio - sum(s.rates[0] for s in kept)
    for s in kept:
        layer = 0
        while layer + 1 < len(s.rates) and s.rates[layer + 1] - s.rates[layer] <= left:
            left -= s.rates[layer + 1] - s.rates[layer]
            layer += 1
        result[s.key] = layer
    return result


def cost(streams: Sequence[Stream], allocation: Mapping[str, int | None]) -> float:
    total = 0.0
    for s in streams:
        layer = allocation.get(s.key)
        if layer is not None:
            total += s.rates[min(layer, len(s.rates) - 1)]
    return total


def _blind(streams: Sequence[Stream], result: Allocation, estimate: DownlinkEstimate) -> bool:
    """Every video paused and no loss: a receiver estimates from video alone, so its REMB
    cannot grow (a browser repeats its last value, which looks fresh): only a probe tells
    whether the link has room again."""
    videos = [s for s in streams if s.kind != "audio"]
    if not videos or any(result.get(s.key) is not None for s in videos):
        return False
    p = estimate.policy
    return estimate.loss <= p.loss_low and estimate.loss_cap_bps is None


def _rank(layer: int | None) -> int:
    return -1 if layer is None else layer


@dataclass
class Allocator:
    """One subscriber's allocation over time (see the module's docstring)."""

    policy: DownlinkPolicy = field(default_factory=lambda: POLICY)
    current: Allocation = field(default_factory=dict)
    last_drop: float = -math.inf
    last_rise: float = -math.inf
    failures: int = 0
    # A probe under way: when it began, and the REMB then.
    probe_since: float | None = None
    probe_remb: int | None = None
    # A probe from every video paused: the REMB it starts from measured no video, and the
    # first key frame may read as a queue to the receiver, so a fall does not end it; its
    # lowest REMB is what it must grow from.
    probe_blind: bool = False
    probe_low: int | None = None
    rise_estimate: float = 0.0  # the estimate at the last rise
    rise_key: str | None = None  # the stream that rose last
    unlimited: bool = False  # its subscriber sends no REMB
    settled_at: float = -math.inf  # when a stream last came: no probe for a step after
    # Padding probes (``DownlinkEstimate.padding``): the rate the caller should probe at
    # now (it takes it and sends the probe), when the last one went out, the estimate then,
    # and how many in a row did not raise it.
    probe_bps: float | None = None
    padding_probe_at: float = -math.inf
    padding_probe_from: float = 0.0
    padding_failures: int = 0
    padding_judge: bool = False  # the last one is still to be judged

    padding: bool = False  # its estimate is probed with padding (``DownlinkEstimate.padding``)

    @property
    def hold_s(self) -> float:
        """How long after a drop before a rise. With padding probes it stays ``hold_s``: a
        failed probe costs no picture, and its own backoff (``max_padding_probe_s``) keeps
        a short link from being flooded; a longer hold would only delay the recovery once
        the link is free again (measured: 14 s, the hold grown under a cap)."""
        p = self.policy
        if self.padding:
            return p.hold_s
        return float(min(p.max_hold_s, p.hold_s * 2.0**self.failures))

    def budget(self, estimate_bps: float) -> float:
        return estimate_bps * (1 - self.policy.repair_share)

    def decide(
        self,
        streams: Sequence[Stream],
        estimate: DownlinkEstimate,
        received_bps: float,
        now: float,
    ) -> Allocation:
        """The allocation from now on. ``received_bps``: what the subscriber was sent lately
        (media and retransmissions), for telling whether its estimate is at its ceiling."""
        p = self.policy
        failures = self.failures
        if estimate.unknown(now) and not self.unlimited:
            # No REMB came: the start value was a guess, and nothing limits it now.
            self.unlimited = True
            self.current = {}
        value, delay = estimate.value(now), estimate.delay_value(now)
        # Kept while it fits the estimate itself; raised only within its budget (the rest
        # left to retransmissions): a band, so that what was just raised is not dropped.
        known = {s.key for s in streams}
        self.current = {k: v for k, v in self.current.items() if k in known}
        sent = {k for k, v in self.current.items() if v is not None}
        fit = allocate(streams, value, delay, sent)
        target = allocate(streams, self.budget(value), self.budget(delay), sent)
        if self.probe_since is not None:
            if all(_rank(fit[k]) >= _rank(v) for k, v in self.current.items()):
                self._end_probe(held=True)  # what it took fits now
            elif estimate.loss > p.loss_high or (
                not self.probe_blind
                and estimate.remb_bps is not None
                and self.probe_remb is not None
                and estimate.remb_bps < self.probe_remb * 0.95
            ):
                self._end_probe(held=False)  # loss, or the estimate fell: it did not hold
            elif now - self.probe_since >= p.probe_window_s:
                remb = estimate.remb_bps
                before = self.probe_low if self.probe_blind else self.probe_remb
                if remb is not None and before is not None and remb > before * 1.05:
                    # Still growing with what arrives: judged again a window later.
                    self.probe_since, self.probe_remb = now, remb
                    self.probe_low = remb
                else:
                    self._end_probe(held=False)
            if self.probe_since is not None and estimate.remb_bps is not None:
                self.probe_low = min(self.probe_low or estimate.remb_bps, estimate.remb_bps)
            if self.probe_since is not None:  # what the probe took stays, for now
                fit = {
                    k: v if _rank(v) >= _rank(self.current.get(k)) else self.current[k]
                    for k, v in fit.items()
                }
        result: Allocation = {}
        dropped = False
        rose = False
        for s in sorted(streams, key=lambda s: (s.kind != "audio", s.priority)):
            want = target[s.key]
            if s.key not in self.current:
                result[s.key] = want  # a new stream: its first layer is taken whole
                self.settled_at = now
                continue
            now_at = self.current[s.key]
            if now_at is not None:
                now_at = min(now_at, len(s.rates) - 1)
            if _rank(fit[s.key]) < _rank(now_at):
                layer = fit[s.key]
                if layer is None and self._after_rise(s.key, estimate, now):
                    layer = 0
                result[s.key] = layer
                dropped = dropped or _rank(layer) < _rank(now_at)
            elif _rank(want) > _rank(now_at) and not rose and self._may_rise(now):
                result[s.key] = _rank(now_at) + 1
                rose = True
            else:
                result[s.key] = now_at
        if dropped:
            if (
                now - self.last_rise < p.probe_window_s
                and failures == self.failures
                and value >= 0.9 * self.rise_estimate
            ):
                # It rose and fell back within a probe's window, the estimate unchanged:
                # what it rose to costs more than the estimate holds (a link that changes
                # is no flapping: each change is followed).
                self.failures += 1
            self.last_drop = now
        if rose:
            self.last_rise = now
            self.rise_estimate = value
            self.rise_key = self._risen(result)
        elif estimate.padding:
            self.padding = True
            # Probes measure the delay-based estimate (loss caps it on its own schedule).
            if self.padding_judge and delay > self.padding_probe_from * 1.05:
                self.padding_judge = False  # the last probe raised the estimate
                self.padding_failures = 0
            if (
                not dropped
                and p.probe
                and self._may_rise(now)
                and now - self.settled_at >= p.step_s
            ):
                self._padding_probe(streams, result, delay, now)
        elif (
            not dropped
            and p.probe
            and self._may_rise(now)
            and now - self.settled_at >= p.step_s
            and (estimate.at_ceiling(received_bps, now) or _blind(streams, result, estimate))
        ):
            blind = _blind(streams, result, estimate)
            rose = self._probe(streams, result)
            if rose:
                self.last_rise = self.probe_since = now
                self.rise_key = self._risen(result)
                self.rise_estimate = value
                self.probe_remb = self.probe_low = estimate.remb_bps
                self.probe_blind = blind
        if not dropped and self.failures and now - self.last_drop > self.policy.max_hold_s:
            self.failures = 0
        self.current = result
        return dict(result)

    def _padding_probe(
        self, streams: Sequence[Stream], result: Allocation, value: float, now: float
    ) -> None:
        """Ask for a padding probe at what one layer more than ``result`` needs, when one is
        due and something does not fit."""
        p = self.policy
        wait = min(p.max_padding_probe_s, p.padding_probe_s * 2.0**self.padding_failures)
        if now - self.padding_probe_at < wait:
            return
        trial = dict(result)
        if not self._probe(streams, trial):
            return  # everything is sent at its best already
        if self.padding_judge:
            # The last probe raised nothing (one that did is seen in ``decide`` at once).
            self.padding_judge = False
            self.padding_failures += 1
            wait = min(p.max_padding_probe_s, p.padding_probe_s * 2.0**self.padding_failures)
            if now - self.padding_probe_at < wait:
                return
        need = cost(streams, trial) / (1 - p.repair_share) * p.probe_margin
        # At most ``probe_growth`` times the estimate: a layer far above it is reached over
        # a few probes, each raising the estimate, rather than by one long burst.
        self.probe_bps = min(need, p.probe_growth * value)
        self.padding_probe_at = now
        self.padding_probe_from = value
        self.padding_judge = True

    def _risen(self, result: Allocation) -> str | None:
        """The stream sent a higher layer in ``result`` than now (one at most rises)."""
        return next(
            (k for k, v in result.items() if _rank(v) > _rank(self.current.get(k, v))), None
        )

    def _after_rise(self, key: str, estimate: DownlinkEstimate, now: float) -> bool:
        """Whether ``key``, sent before the last rise and not the stream that rose, keeps its
        lowest layer though the estimate no longer has room for it: for ``probe_window_s``
        after a rise, unless loss is high. A resumed video's key frame meets the queue
        of a short link, and the delay-based estimate then falls to 0.85 times what arrived
        over the last second, before the resume (measured: 414 to 189 kbit/s on a 400 kbit/s
        link, pausing the screen share that had been sent there all along); the rise is
        undone at once, and the estimate is back before the window ends."""
        return (
            key != self.rise_key
            and now - self.last_rise < self.policy.probe_window_s
            and estimate.loss <= self.policy.loss_high
        )

    def _end_probe(self, *, held: bool) -> None:
        self.probe_since = self.probe_remb = self.probe_low = None
        self.probe_blind = False
        if held:
            self.failures = 0
        else:
            self.failures += 1

    def _may_rise(self, now: float) -> bool:
        return now - self.last_rise >= self.policy.step_s and now - self.last_drop >= self.hold_s

    def _probe(self, streams: Sequence[Stream], result: Allocation) -> bool:
        """One layer more than fits, for the most important video that has one above."""
        for s in sorted((s for s in streams if s.kind != "audio"), key=lambda s: s.priority):
            at = result.get(s.key)
            if _rank(at) + 1 < len(s.rates):
                result[s.key] = _rank(at) + 1
                return True
        return False

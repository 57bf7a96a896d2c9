"""The retransmission rules of sfu.retransmit, as a spec: what a subscriber gets again when it
NACKs, and what it does not."""

from __future__ import annotations

import pytest

from sfu.retransmit import RepairBudget, RepairPolicy, Verdict

VIDEO = 1111
AUDIO = 2222
PACKET = 1_000  # bytes


class Media:
    """A subscriber's media byte counter, moved on by the test."""

    def __init__(self) -> None:
        self.bytes = 0

    def __call__(self) -> int:
        return self.bytes


def ask(
    budget: RepairBudget,
    seq: int,
    now: float,
    *,
    ssrc: int = VIDEO,
    age: float = 0.05,
    size: int = PACKET,
) -> Verdict:
    """One NACKed packet, decided as the forwarder does: screened, then paid for."""
    audio = ssrc == AUDIO
    verdict = budget.screen(ssrc, seq, audio=audio, age_s=age, now=now)
    if verdict is not Verdict.SEND:
        return verdict
    return budget.take(ssrc, seq, size, audio=audio, now=now)


def nack(budget: RepairBudget, seqs: range | list[int], now: float, **kw: float) -> list[Verdict]:
    budget.refill(now)
    return [ask(budget, seq, now, **kw) for seq in seqs]  # type: ignore[arg-type]


def test_a_packet_is_resent_at_most_once_per_round_trip() -> None:
    budget = RepairBudget()
    budget.on_rtt(0.08)
    assert nack(budget, [7], 10.0) == [Verdict.SEND]
    # The NACK repeated while the retransmission is still on its way: suppressed.
    assert nack(budget, [7, 7], 10.01) == [Verdict.DUPLICATE, Verdict.DUPLICATE]
    assert nack(budget, [7], 10.079) == [Verdict.DUPLICATE]
    # A round trip later it was lost again: once more.
    assert nack(budget, [7], 10.08) == [Verdict.SEND]
    # Per sender: the same number on another track is another packet.
    assert nack(budget, [7], 10.09, ssrc=AUDIO) == [Verdict.SEND]


def test_the_round_trip_has_a_floor_and_a_default() -> None:
    policy = RepairPolicy(rtt_floor_s=0.02, rtt_default_s=0.1)
    budget = RepairBudget(policy=policy)
    assert budget.resend_interval_s == 0.1  # no receiver report yet
    budget.on_rtt(None)  # still none: the default stays
    assert budget.resend_interval_s == 0.1
    budget.on_rtt(0.001)  # loopback: a resend every millisecond would be a storm
    assert budget.resend_interval_s == 0.02
    budget.on_rtt(0.3)
    assert budget.resend_interval_s == 0.3
    assert nack(budget, [1], 0.0) == [Verdict.SEND]
    assert nack(budget, [1], 0.29) == [Verdict.DUPLICATE]
    assert nack(budget, [1], 0.3) == [Verdict.SEND]


def test_a_packet_too_old_to_play_is_not_resent() -> None:
    policy = RepairPolicy(video_max_age_s=0.5, audio_max_age_s=0.15)
    budget = RepairBudget(policy=policy)
    assert nack(budget, [1], 0.0, age=0.5) == [Verdict.SEND]
    assert nack(budget, [2], 0.0, age=0.51) == [Verdict.TOO_OLD]
    # Audio waits less in a receiver's buffer.
    assert nack(budget, [3], 0.0, age=0.15, ssrc=AUDIO, size=100) == [Verdict.SEND]
    assert nack(budget, [4], 0.0, age=0.2, ssrc=AUDIO, size=100) == [Verdict.TOO_OLD]
    # Too old is said before duplicate: it will never be sent again.
    assert nack(budget, [1], 0.01, age=0.6) == [Verdict.TOO_OLD]


def test_a_burst_beyond_the_budget_is_capped_then_refills() -> None:
    policy = RepairPolicy(min_rate_bps=80_000, burst_s=0.2, min_burst_bytes=4_000)
    budget = RepairBudget(policy=policy)
    assert budget.rate_bps == 80_000  # nothing known yet: the floor
    assert budget.capacity_bytes == 4_000  # 200 ms of 10 kB/s is 2 kB: the minimum burst
    verdicts = nack(budget, range(100), 0.0)
    # Video leaves a quarter of the bucket to audio: 3,000 of 4,000 bytes, three packets.
    assert verdicts.count(Verdict.SEND) == 3
    assert verdicts[:3] == [Verdict.SEND] * 3
    assert set(verdicts[3:]) == {Verdict.OVER_BUDGET}
    # 10 kB/s: a tenth of a second later, one more packet's worth.
    verdicts = nack(budget, range(100, 200), 0.1)
    assert verdicts.count(Verdict.SEND) == 1
    # A long pause fills it no further than its size.
    verdicts = nack(budget, range(200, 300), 60.0)
    assert verdicts.count(Verdict.SEND) == 3


def test_what_is_refused_over_budget_is_not_taken_for_sent() -> None:
    policy = RepairPolicy(min_rate_bps=80_000, min_burst_bytes=4_000)
    budget = RepairBudget(policy=policy)
    assert nack(budget, range(4), 0.0)[3] is Verdict.OVER_BUDGET
    # It was never sent: asked again within the round trip it is not a duplicate.
    assert nack(budget, [3], 0.1) == [Verdict.SEND]


def test_audio_is_repaired_when_video_has_spent_its_share() -> None:
    policy = RepairPolicy(min_rate_bps=80_000, min_burst_bytes=4_000, audio_reserve=0.25)
    budget = RepairBudget(policy=policy)
    video = nack(budget, range(100), 0.0)
    assert Verdict.OVER_BUDGET in video
    # A thousand bytes are left, audio's: ten 100-byte Opus packets get through.
    audio = nack(budget, range(50), 0.0, ssrc=AUDIO, size=100)
    assert audio.count(Verdict.SEND) == 10
    assert audio[:10] == [Verdict.SEND] * 10
    assert audio[10:] == [Verdict.OVER_BUDGET] * 40
    # And video never takes audio's reserve back within the same burst.
    assert nack(budget, [500], 0.0) == [Verdict.OVER_BUDGET]


def test_the_budget_is_a_share_of_the_estimate_with_the_media_counted() -> None:
    media = Media()
    policy = RepairPolicy(rate_share=0.2, min_rate_bps=64_000, burst_s=0.2, rate_window_s=0.25)
    budget = RepairBudget(media, policy)
    budget.on_estimate(2_000_000)
    budget.refill(0.0)
    assert budget.rate_bps == 400_000  # a fifth of the estimate
    assert budget.capacity_bytes == 10_000  # 200 ms of it
    # The media measured: 1.5 Mbit/s over one second.
    media.bytes = 187_500
    budget.refill(1.0)
    assert budget.media_bps == 1_500_000
    assert budget.rate_bps == 400_000  # 1.9 Mbit/s in all: under the estimate
    # The estimate falls to 1.7 Mbit/s: retransmissions get what the media leaves.
    budget.on_estimate(1_700_000)
    assert budget.rate_bps == pytest.approx(200_000)
    # Media above the estimate: repair keeps its floor (audio must be repairable).
    budget.on_estimate(1_000_000)
    assert budget.rate_bps == 64_000


def test_without_an_estimate_the_budget_is_a_share_of_the_media_sent() -> None:
    media = Media()
    policy = RepairPolicy(rate_share=0.2, min_rate_bps=64_000, rate_window_s=0.25)
    budget = RepairBudget(media, policy)
    budget.refill(0.0)
    assert budget.media_bps is None and budget.rate_bps == 64_000
    media.bytes = 10_000  # measured over less than the window: not yet a rate
    budget.refill(0.1)
    assert budget.media_bps is None
    media.bytes = 125_000  # 1 Mbit/s over one second
    budget.refill(1.0)
    assert budget.media_bps == 1_000_000
    assert budget.rate_bps == 200_000
    # Tracks unsubscribed (their counters gone): never a negative rate.
    media.bytes = 0
    budget.refill(2.0)
    assert budget.media_bps == 0 and budget.rate_bps == 64_000


def test_sent_times_are_forgotten_once_they_could_only_be_too_old() -> None:
    policy = RepairPolicy(video_max_age_s=0.5, min_burst_bytes=1_000_000, audio_reserve=0)
    budget = RepairBudget(policy=policy)
    nack(budget, range(1000), 0.0)
    assert len(budget._sent) == 1000
    nack(budget, [5000], 2.0)
    assert len(budget._sent) == 1

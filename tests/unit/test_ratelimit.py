"""signaling.ratelimit: token bucket verdicts and flood detection over a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signaling.ratelimit import RateLimiter, Verdict

ALLOW, REJECT, CLOSE = Verdict.ALLOW, Verdict.REJECT, Verdict.CLOSE


class Clock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def verdicts(limiter: RateLimiter, n: int, now: float) -> list[Verdict]:
    return [limiter.check(now) for _ in range(n)]


def test_verdict_values() -> None:
    assert [v.value for v in Verdict] == ["allow", "reject", "close"]


def test_burst_is_allowed_at_once_then_rejected() -> None:
    limiter = RateLimiter(rate=10, burst=5, strikes=100, now=0.0)
    assert verdicts(limiter, 5, 0.0) == [ALLOW] * 5
    assert limiter.check(0.0) is REJECT


def test_tokens_come_back_at_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=5, strikes=100, now=clock.now)
    assert verdicts(limiter, 5, clock.now) == [ALLOW] * 5
    assert limiter.check(clock.advance(0.05)) is REJECT  # half a token
    assert limiter.check(clock.advance(0.06)) is ALLOW  # 1.1 tokens by now
    assert limiter.check(clock.now) is REJECT
    clock.advance(0.3)  # 3 tokens
    assert verdicts(limiter, 4, clock.now) == [ALLOW, ALLOW, ALLOW, REJECT]


def test_tokens_never_exceed_the_burst() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=100, burst=3, strikes=100, now=clock.now)
    clock.advance(3600)
    assert verdicts(limiter, 4, clock.now) == [ALLOW, ALLOW, ALLOW, REJECT]


def test_sustained_rate_is_allowed_indefinitely() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=50, burst=2, strikes=1, now=clock.now)
    for _ in range(10_000):
        assert limiter.check(clock.advance(1 / 50)) is ALLOW


def test_just_above_the_rate_is_eventually_rejected() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=50, burst=100, strikes=1000, now=clock.now)
    results = [limiter.check(clock.advance(1 / 60)) for _ in range(1000)]
    assert results[:500] == [ALLOW] * 500  # the burst absorbs the excess for a while
    assert REJECT in results
    assert CLOSE not in results


def test_strikes_run_out_then_close() -> None:
    limiter = RateLimiter(rate=1, burst=2, strikes=3, now=0.0)
    assert verdicts(limiter, 2, 0.0) == [ALLOW, ALLOW]
    # exactly `strikes` rejections are tolerated; the next one closes
    assert verdicts(limiter, 3, 0.0) == [REJECT, REJECT, REJECT]
    assert limiter.check(0.0) is CLOSE
    assert limiter.check(0.0) is CLOSE


def test_strikes_come_back_at_a_tenth_of_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=5, strikes=2, now=clock.now)
    assert verdicts(limiter, 5, clock.now) == [ALLOW] * 5
    assert verdicts(limiter, 2, clock.now) == [REJECT, REJECT]  # strikes: 0 left
    # 0.5 s gives back 5 tokens but only half a strike (rate / 10 = 1 strike/s)
    clock.advance(0.5)
    assert verdicts(limiter, 5, clock.now) == [ALLOW] * 5
    assert limiter.check(clock.now) is CLOSE  # 0.5 - 1 < 0


def test_strikes_recover_fully_but_not_beyond_the_maximum() -> None:
    clock = Clock()
    limiter = RateLimiter(rate=10, burst=1, strikes=2, now=clock.now)
    assert limiter.check(clock.now) is ALLOW
    assert verdicts(limiter, 2, clock.now) == [REJECT, REJECT]
    clock.advance(3600)  # far more than needed for 2 strikes
    assert limiter.check(clock.now) is ALLOW
    assert verdicts(limiter, 3, clock.now) == [REJECT, REJECT, CLOSE]


def test_clock_going_backwards_grants_nothing() -> None:
    limiter = RateLimiter(rate=10, burst=1, strikes=10, now=100.0)
    assert limiter.check(100.0) is ALLOW
    assert limiter.check(50.0) is REJECT


def test_attributes() -> None:
    limiter = RateLimiter(rate=2.5, burst=4, strikes=7, now=0.0)
    assert (limiter.rate, limiter.burst, limiter.max_strikes) == (2.5, 4.0, 7.0)
    with pytest.raises(AttributeError):
        limiter.other = 1  # type: ignore[attr-defined]


@given(
    rate=st.floats(min_value=0.5, max_value=1000),
    burst=st.integers(min_value=1, max_value=200),
    gaps=st.lists(st.floats(min_value=0, max_value=2), max_size=300),
)
def test_never_allows_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, gaps: list[float]
) -> None:
    limiter = RateLimiter(rate=rate, burst=burst, strikes=10**9, now=0.0)
    now = 0.0
    allowed = 0
    for gap in gaps:
        now += gap
        if limiter.check(now) is ALLOW:
            allowed += 1
        assert allowed <= burst + rate * now + 1e-6

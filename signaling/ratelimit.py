"""Per-connection request rate limiting: a token bucket plus a flood detector. Pure."""

from __future__ import annotations

import enum


class Verdict(enum.Enum):
    ALLOW = "allow"
    REJECT = "reject"  # answer with a rate_limited error, keep the connection
    CLOSE = "close"  # the client ignores rejections: close with the flood code


class RateLimiter:
    """``rate`` requests/s sustained with bursts of ``burst``.

    A rejected request costs one strike; strikes come back at a tenth of ``rate``. A client
    that runs out of strikes is flooding and is disconnected.
    """

    __slots__ = ("_last", "_strikes", "_tokens", "burst", "max_strikes", "rate")

    def __init__(self, rate: float, burst: int, strikes: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_strikes = float(strikes)
        self._tokens = float(burst)
        self._strikes = float(strikes)
        self._last = now

    def check(self, now: float) -> Verdict:
        elapsed = max(0.0, now - self._last)
        self._last = now
        self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
        self._strikes = min(self.max_strikes, self._strikes + elapsed * self.rate / 10)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Verdict.ALLOW
        self._strikes -= 1.0
        return Verdict.CLOSE if self._strikes < 0 else Verdict.REJECT

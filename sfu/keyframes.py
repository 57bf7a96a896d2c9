"""Keyframe request throttling. Pure: the caller passes the clock."""

from __future__ import annotations

from typing import Final

# At most two picture-loss requests per second go to a publisher for one track.
MIN_INTERVAL_S: Final = 0.5
# A subscriber still waiting for a key frame this long after the last request asks again
# (the request or the key frame may have been lost).
RETRY_AFTER_S: Final = 1.0


class KeyframeThrottle:
    """Decides when a keyframe request may go out; a refused one is deferred, never dropped."""

    __slots__ = ("_last", "interval")

    def __init__(self, interval: float = MIN_INTERVAL_S) -> None:
        self.interval = interval
        self._last: float | None = None

    def delay(self, now: float) -> float:
        """Seconds until a request may be sent (0: now)."""
        if self._last is None:
            return 0.0
        return max(0.0, self._last + self.interval - now)

    def sent(self, now: float) -> None:
        self._last = now

    def since_last(self, now: float) -> float:
        return float("inf") if self._last is None else now - self._last

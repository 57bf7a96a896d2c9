"""Keyframe request throttling. Pure: the caller passes the clock."""

from __future__ import annotations

from typing import Final

# At most two picture-loss requests per second go to a publisher for one track.
MIN_INTERVAL_S: Final = 0.5


class KeyframeThrottle:
    __slots__ = ("_last", "interval")

    def __init__(self, interval: float = MIN_INTERVAL_S) -> None:
        self.interval = interval
        self._last: float | None = None

    def allow(self, now: float) -> bool:
        if self._last is not None and now - self._last < self.interval:
            return False
        self._last = now
        return True

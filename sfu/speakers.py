"""Active speaker detection from RFC 6464 audio levels, read off packets, never decoded. Pure.

Levels arrive as -dBov (0 loudest, 127 silence) per audio packet. Each track keeps an
exponentially smoothed loudness; a track speaks while its loudness stays above a threshold,
with hysteresis so that a pause between words does not drop it. The ranking (loudest first)
is published at most ``max_rate_hz`` times a second and only when it changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

SILENCE: Final = 127
# Louder than -50 dBov starts speech; quieter than -60 dBov for HOLD_S ends it.
START_LEVEL: Final = 50
STOP_LEVEL: Final = 60
HOLD_S: Final = 0.6
SMOOTHING: Final = 0.2  # weight of a new packet's loudness
STALE_S: Final = 1.0  # a track with no packet for this long is silent


@dataclass
class _Track:
    loudness: float = 0.0  # 127 - smoothed level: higher is louder
    last_packet: float = 0.0
    speaking: bool = False
    last_loud: float = 0.0


@dataclass
class SpeakerDetector:
    max_rate_hz: float = 4.0
    _tracks: dict[str, _Track] = field(default_factory=dict)
    _published: list[str] = field(default_factory=list)
    _last_emit: float | None = None

    def observe(self, key: str, level: int, now: float) -> None:
        """One packet's audio level (-dBov) for the track ``key``."""
        track = self._tracks.get(key)
        if track is None:
            track = self._tracks[key] = _Track()
        loud = float(SILENCE - min(max(level, 0), SILENCE))
        track.loudness += SMOOTHING * (loud - track.loudness)
        track.last_packet = now
        smoothed_level = SILENCE - track.loudness
        if smoothed_level <= START_LEVEL:
            track.speaking = True
            track.last_loud = now
        elif smoothed_level <= STOP_LEVEL:
            track.last_loud = now if track.speaking else track.last_loud
        elif track.speaking and now - track.last_loud > HOLD_S:
            track.speaking = False

    def forget(self, key: str) -> None:
        self._tracks.pop(key, None)

    def loudness(self, key: str, now: float) -> float:
        track = self._tracks.get(key)
        if track is None or now - track.last_packet > STALE_S:
            return 0.0
        return track.loudness

    def ranking(self, now: float) -> list[str]:
        """Speaking tracks, loudest first."""
        speaking = [
            (track.loudness, key)
            for key, track in self._tracks.items()
            if track.speaking and now - track.last_packet <= STALE_S
        ]
        return [key for _, key in sorted(speaking, key=lambda x: (-x[0], x[1]))]

    def loudest(self, now: float, count: int) -> list[str]:
        """The ``count`` loudest tracks, speaking or not (for selecting what to forward)."""
        ordered = sorted(self._tracks, key=lambda k: (-self.loudness(k, now), k))
        return ordered[:count]

    def changed(self, now: float) -> list[str] | None:
        """The ranking if it changed since last published and the rate allows; else None."""
        if self._last_emit is not None and now - self._last_emit < 1.0 / self.max_rate_hz:
            return None
        current = self.ranking(now)
        if current == self._published:
            return None
        self._published = current
        self._last_emit = now
        return current

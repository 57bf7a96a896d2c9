"""Which streams a subscriber gets in a large room, and what a simulcast layer costs. Pure:
no I/O, the caller passes the clock's readings.

Up to ``select_above`` participants every subscriber gets every stream. Above it each gets
- the audio of the ``audio_max`` loudest tracks (never its own), so that a large room does
  not send everyone's background noise to everyone;
- the video of the last ``video_last_n`` participants who spoke, most recent first (those
  who never spoke follow in the order they joined), never its own, plus the participants
  it pinned (``call.pin``).
Speaking order (``last_speakers``) moves whoever speaks now to the front.

A simulcast layer's bitrate is estimated from the bytes it brought in between two ticks,
smoothed; a paused layer keeps the rate it had (it costs that when resumed, not nothing).
A publisher is told to pause the layers no subscriber takes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

# Weight of the newest tick in a layer's bitrate estimate: some 2 s of ticks count, so that
# a key frame is no jump in what a layer is taken to cost (sfu.downlink allocates by it).
SMOOTHING: Final = 0.1
MIN_ELAPSED_S: Final = 1e-3  # a tick's length is never taken as shorter than this


@dataclass(frozen=True)
class Selection:
    """What one subscriber gets in a selective room: audio by track key, video by owner."""

    audio: frozenset[str]
    video: frozenset[str]

    def forwards(self, kind: str, track_key: str, owner: str) -> bool:
        return track_key in self.audio if kind == "audio" else owner in self.video


def is_selective(participants: int, select_above: int) -> bool:
    return participants > select_above


def last_speakers(recent: Sequence[str], speaking: Sequence[str]) -> list[str]:
    """``recent`` (participants, most recent speaker first) after ``speaking`` spoke (the
    loudest first): they move to the front, in their order."""
    order = [who for who in recent if who not in speaking]
    return list(dict.fromkeys(speaking)) + order


def speaking_order(recent: Sequence[str], participants: Iterable[str]) -> list[str]:
    """Every participant, the most recent speaker first; those who never spoke last."""
    return list(recent) + [p for p in participants if p not in recent]


def select(
    subscriber: str,
    *,
    loudest: Sequence[str],
    order: Sequence[str],
    pinned: Iterable[str],
    audio_max: int,
    video_last_n: int,
) -> Selection:
    """The streams ``subscriber`` gets in a selective room. ``loudest``: audio track keys
    (``PARTICIPANT:TRACK``), loudest first; ``order``: as ``speaking_order``."""
    audio = [key for key in loudest if not key.startswith(subscriber + ":")]
    others = [who for who in order if who != subscriber]
    return Selection(
        audio=frozenset(audio[:audio_max]),
        video=frozenset(others[:video_last_n]) | frozenset(pinned),
    )


def layer_bitrate(
    previous_bps: float, grown_bytes: int, elapsed_s: float, *, paused: bool
) -> float:
    """A track's bitrate after a tick in which it brought ``grown_bytes``. The first that
    brought anything is taken whole: a layer paused soon after it started keeps what was
    measured of it, and smoothing up from zero would have it look cheap."""
    if paused and not grown_bytes:
        return previous_bps
    rate = grown_bytes * 8 / max(MIN_ELAPSED_S, elapsed_s)
    if previous_bps <= 0:
        return rate
    return (1 - SMOOTHING) * previous_bps + SMOOTHING * rate


def layers_to_pause(layers: Iterable[str], taken: Iterable[str]) -> list[str]:
    """The layers (by mid) of a publisher that no subscriber takes, sorted."""
    wanted = set(taken)
    return sorted(mid for mid in layers if mid not in wanted)

"""Simulcast layer choice per subscriber. Pure: no I/O, the caller passes the clock.

A publisher sends up to three layers of one video source. For each subscriber the SFU
forwards the highest layer that fits both the size the subscriber renders (``max_height``)
and its downlink: the receiver's estimate (REMB) with some headroom, and its reported loss.
It steps down at once (on loss at most once a second, so that one bad report does not drop
every layer) and steps up only after the better layer has fitted for a while.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

UP_DELAY_S: Final = 2.0
DOWN_COOLDOWN_S: Final = 1.0
LOSS_DOWN: Final = 0.10  # fraction lost in a receiver report that means "too much"
HEADROOM: Final = 0.85  # share of the estimate a layer may use


@dataclass(frozen=True)
class Layer:
    quality: int
    height: int
    bitrate_bps: float


@dataclass
class LayerChooser:
    up_since: float | None = None
    last_down: float = float("-inf")

    def choose(
        self,
        layers: list[Layer],
        current: int | None,
        *,
        max_height: int | None,
        estimate_bps: float | None,
        loss: float,
        now: float,
    ) -> int:
        """The quality to forward next. ``layers`` is sorted by quality, never empty."""
        allowed = [x for x in layers if max_height is None or x.height <= max_height]
        if not allowed:
            allowed = layers[:1]
        target = allowed[-1].quality
        if estimate_bps is not None:
            fitting = [x for x in allowed if x.bitrate_bps <= estimate_bps * HEADROOM]
            target = fitting[-1].quality if fitting else allowed[0].quality
        if current is None:
            return target
        if loss > LOSS_DOWN and now - self.last_down >= DOWN_COOLDOWN_S:
            lower = [x.quality for x in allowed if x.quality < current]
            target = min(target, lower[-1] if lower else allowed[0].quality)
        if target > current:
            if self.up_since is None:
                self.up_since = now
            if now - self.up_since < UP_DELAY_S:
                return current
            self.up_since = None
            return target
        self.up_since = None
        if target < current:
            self.last_down = now
        return target

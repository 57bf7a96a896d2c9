"""Simulcast layers as a subscriber may get them. Pure.

A publisher sends up to three layers of one video source. A subscriber gets at most the
size it renders (``max_height``, from ``sfu.track_settings``): the layers above it are not
offered to its allocation (``sfu.downlink``), which picks among the rest by its downlink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

# What a layer that was never measured is taken to cost: this many times the layer below it
# (a layer nobody took yet may never have been sent).
UNMEASURED_FACTOR: Final = 2.5


@dataclass(frozen=True)
class Layer:
    quality: int
    height: int
    bitrate_bps: float


def allowed(layers: Sequence[Layer], max_height: int | None) -> list[Layer]:
    """The layers (sorted by quality) within ``max_height``; if none is, those of the
    smallest height (one for a camera; every layer of a screen share, whose layers differ
    in frame rate at one height, so a small tile does not slow the screen down)."""
    within = [x for x in layers if max_height is None or x.height <= max_height]
    if within or not layers:
        return within
    return [x for x in layers if x.height == layers[0].height]


def rates(layers: Sequence[Layer]) -> tuple[float, ...]:
    """What each layer costs, lowest first: as measured, never less than the layer below it.
    A layer never measured (nobody took it yet, so it may never have been sent) is guessed
    from its nearest measured neighbour, ``UNMEASURED_FACTOR`` times more per step up."""
    measured = [(i, x.bitrate_bps) for i, x in enumerate(layers) if x.bitrate_bps > 0]
    out: list[float] = []
    for i, layer in enumerate(layers):
        rate = layer.bitrate_bps
        if rate <= 0 and measured:
            j, known = min(measured, key=lambda m: abs(m[0] - i))
            rate = known * UNMEASURED_FACTOR ** (i - j)
        if out:
            rate = max(rate, out[-1])
        out.append(float(rate))
    return tuple(out)

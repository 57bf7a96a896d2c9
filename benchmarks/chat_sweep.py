"""Room-size sweep of the chat load benchmark: server CPU per message, split in two.

``python -m benchmarks.chat_load --room-sizes 2,10,100,500`` runs, for each size, rooms of
that size at a fixed offered message rate (fewer messages per second in rooms too large for
it, see :func:`message_rate`), on Huddle (one node) and on the bare relay in the same run. A
message to a room of s members makes s - 1 deliveries, so the CPU the servers (node and its
Redis, or the relay and its Redis) spend per message is fitted as
``fixed + per_delivery x deliveries``: the fixed part is what every message costs before any
delivery (request, storage, reply, echo), the other the cost of each member reached.

Pure: the runner in benchmarks.chat_load measures the points, this module plans and fits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from benchmarks.common import goal, ratio

# Each size gets rooms until this many clients are in them (one room when a room is larger).
SWEEP_CLIENTS: Final = 40
DEFAULT_MESSAGE_RATE: Final = 400.0  # messages/s offered in every size
# Deliveries/s at most, so that large rooms measure the server, not the drivers.
DEFAULT_MAX_DELIVERIES: Final = 8000.0

TARGET_FIXED_VS_BARE: Final = 2.0
TARGET_DELIVERY_VS_BARE: Final = 1.2
TARGET_ONE_TO_ONE: Final = 3000.0


@dataclass(frozen=True)
class SweepPoint:
    """One room size on one target: what was sent and what the servers spent on it."""

    size: int
    messages: int
    deliveries: int
    server_cpu_s: float  # node (or relay) and its Redis, over the paced window

    @property
    def deliveries_per_message(self) -> float:
        return self.deliveries / self.messages if self.messages else 0.0

    @property
    def us_per_message(self) -> float | None:
        return self.server_cpu_s * 1e6 / self.messages if self.messages else None


def parse_sizes(text: str) -> tuple[int, ...]:
    """``2,10,100`` -> (2, 10, 100); each size 2-1000, no repeats."""
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"room sizes are whole numbers separated by commas: {text!r}") from None
    if not sizes or any(not 2 <= s <= 1000 for s in sizes) or len(set(sizes)) != len(sizes):
        raise ValueError(f"room sizes are 2-1000, each once: {text!r}")
    return sizes


def rooms(size: int, clients: int = SWEEP_CLIENTS) -> tuple[int, ...]:
    """The room sizes of one sweep step: enough rooms of ``size`` for ``clients`` clients."""
    return (size,) * max(1, math.ceil(clients / size))


def message_rate(size: int, rate: float, max_deliveries: float) -> float:
    """Messages/s offered to rooms of ``size``: ``rate``, or less when its deliveries would
    exceed ``max_deliveries`` per second."""
    return min(rate, max_deliveries / (size - 1))


def fit(points: Sequence[SweepPoint]) -> tuple[float, float] | None:
    """Least squares of µs per message over deliveries per message: (fixed, per delivery)."""
    xy = [(p.deliveries_per_message, p.us_per_message) for p in points]
    pairs = [(x, y) for x, y in xy if y is not None]
    if len({x for x, _ in pairs}) < 2:
        return None
    n = len(pairs)
    mx = sum(x for x, _ in pairs) / n
    my = sum(y for _, y in pairs) / n
    sxx = sum((x - mx) ** 2 for x, _ in pairs)
    sxy = sum((x - mx) * (y - my) for x, y in pairs)
    slope = sxy / sxx
    return my - slope * mx, slope


# A fitted baseline cost below this (µs) is noise, not a cost to compare with: when the bare
# relay's points came out level, its per-delivery cost fitted to about zero and the ratio
# over it read -6.6e14.
MIN_BASELINE_US: Final = 0.1


def _versus(ours: float, theirs: float) -> float | None:
    return ratio(ours, theirs) if theirs >= MIN_BASELINE_US else None


def sweep_summary(
    huddle: Sequence[SweepPoint], bare: Sequence[SweepPoint]
) -> dict[str, float | None]:
    ours, theirs = fit(huddle), fit(bare)
    two = next((p for p in huddle if p.size == 2), None)
    per_message = two.us_per_message if two is not None else None
    return {
        "fixed_us_per_message": ours[0] if ours else None,
        "us_per_delivery": ours[1] if ours else None,
        "bare_fixed_us_per_message": theirs[0] if theirs else None,
        "bare_us_per_delivery": theirs[1] if theirs else None,
        "fixed_vs_bare": _versus(ours[0], theirs[0]) if ours and theirs else None,
        "delivery_vs_bare": _versus(ours[1], theirs[1]) if ours and theirs else None,
        "one_to_one_msgs_per_core_s": 1e6 / per_message if per_message else None,
    }


def sweep_targets(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        "fixed_vs_bare": goal(
            figures["fixed_vs_bare"],
            f"<= {TARGET_FIXED_VS_BARE}",
            lambda v: v <= TARGET_FIXED_VS_BARE,
        ),
        "delivery_vs_bare": goal(
            figures["delivery_vs_bare"],
            f"<= {TARGET_DELIVERY_VS_BARE}",
            lambda v: v <= TARGET_DELIVERY_VS_BARE,
        ),
        "one_to_one_msgs_per_core_s": goal(
            figures["one_to_one_msgs_per_core_s"],
            f">= {TARGET_ONE_TO_ONE:,.0f}",
            lambda v: v >= TARGET_ONE_TO_ONE,
        ),
        "lost": goal(figures["lost"], "0", lambda v: v == 0),
        "duplicated": goal(figures["duplicated"], "0", lambda v: v == 0),
    }


def sweep_table(huddle: Sequence[SweepPoint], bare: Sequence[SweepPoint]) -> list[str]:
    by_size = {p.size: p for p in bare}
    lines = ["room size | msgs | deliveries/msg | huddle µs/msg | bare µs/msg"]
    for p in huddle:
        b = by_size.get(p.size)
        theirs = b.us_per_message if b else None
        lines.append(
            f"{p.size:>9} | {p.messages:>4} | {p.deliveries_per_message:>14.1f} | "
            f"{p.us_per_message or 0:>13,.0f} | {theirs or 0:>11,.0f}"
        )
    return lines

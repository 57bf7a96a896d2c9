"""Who is in which group of the chat load benchmark, and when each client sends.

Pure: ``benchmarks.chat_load`` places its N clients with :func:`group_sizes`, and every
driver process derives the same groups (:func:`group_of`) and the same paced sending order
(:func:`paced_schedule`) from the sizes and a seed, so no schedule crosses a pipe.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Final

# Group sizes, taken in turn until the N clients are placed (the last one takes the rest).
GROUP_SIZES: Final = (10, 20, 50, 100, 200)
MIN_GROUP: Final = 10
MAX_GROUP: Final = 200


def group_sizes(n: int) -> list[int]:
    """Sizes from GROUP_SIZES in turn, summing to ``n``; the rest is folded into the last."""
    sizes: list[int] = []
    left = n
    while left > 0:
        take = min(GROUP_SIZES[len(sizes) % len(GROUP_SIZES)], left)
        rest = left - take
        if 0 < rest < MIN_GROUP:
            take = take + rest if take + rest <= MAX_GROUP else take - (MIN_GROUP - rest)
        sizes.append(take)
        left -= take
    return sizes


def group_of(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """(group, rank in it) of each client number; groups hold consecutive numbers."""
    return [(g, rank) for g, size in enumerate(sizes) for rank in range(size)]


def paced_schedule(
    sizes: Sequence[int], rate: float, duration: float, seed: int
) -> list[tuple[float, int]]:
    """(seconds after the start, sender) of every message of a paced phase.

    Every client sends in turn (a shuffled order, repeated), so each sends as often as any
    other; a message is due when the deliveries of the ones before it reach ``rate`` x time,
    so deliveries to other members, not messages, arrive at ``rate``."""
    fanout = [size - 1 for size in sizes for _ in range(size)]
    order = list(range(len(fanout)))
    random.Random(seed).shuffle(order)
    schedule: list[tuple[float, int]] = []
    delivered = 0
    while delivered / rate < duration:
        sender = order[len(schedule) % len(order)]
        schedule.append((delivered / rate, sender))
        delivered += max(1, fanout[sender])
    return schedule

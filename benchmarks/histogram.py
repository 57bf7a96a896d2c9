"""Log-bucketed latency histograms that merge exactly: what a run keeps in its JSON.

Percentiles cannot be merged (the p99 of two shards is not a function of their p99s), so
every latency figure a load generator writes comes with the histogram it was read from, and
``benchmarks.merge`` adds the histograms of several shards before reading percentiles again.
Every histogram uses the same buckets: bucket ``i`` holds values in
``(LOWEST_MS * GROWTH**(i-1), LOWEST_MS * GROWTH**i]``, so a percentile read from it is the
bucket's upper edge, at most 1% above the true value (as an HDR histogram with two
significant digits), and two histograms merge by adding their counts.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Final

LOWEST_MS: Final = 0.001  # 1 µs: anything faster is counted in bucket 0
GROWTH: Final = 1.01
_LOG_GROWTH: Final = math.log(GROWTH)


class Histogram:
    """Counts of values (milliseconds) by bucket."""

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self.counts: Counter[int] = Counter(counts or {})

    @staticmethod
    def bucket(value_ms: float) -> int:
        if value_ms <= LOWEST_MS:
            return 0
        # The epsilon keeps an exact edge (LOWEST_MS * GROWTH**i) in bucket i despite rounding.
        return max(0, math.ceil(math.log(value_ms / LOWEST_MS) / _LOG_GROWTH - 1e-9))

    @staticmethod
    def upper(bucket: int) -> float:
        return float(LOWEST_MS * GROWTH**bucket)

    @classmethod
    def of(cls, values_ms: Iterable[float]) -> Histogram:
        h = cls()
        h.counts.update(cls.bucket(v) for v in values_ms)
        return h

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def add(self, other: Histogram) -> Histogram:
        return Histogram(self.counts + other.counts)

    def percentile(self, q: float) -> float | None:
        """Nearest rank, as ``benchmarks.common.percentile``: the upper edge of the bucket
        holding the ``ceil(count * q / 100)``-th value (None when empty)."""
        total = self.count
        if not total:
            return None
        rank = max(1, math.ceil(total * q / 100))
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            if seen >= rank:
                return self.upper(bucket)
        return self.upper(max(self.counts))

    def max(self) -> float | None:
        return self.upper(max(self.counts)) if self.counts else None

    def cdf(self) -> list[tuple[float, float]]:
        """(value ms, share of values at or below it) at each bucket's upper edge."""
        total = self.count
        points: list[tuple[float, float]] = []
        seen = 0
        for bucket in sorted(self.counts):
            seen += self.counts[bucket]
            points.append((self.upper(bucket), seen / total))
        return points

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": "ms",
            "lowest": LOWEST_MS,
            "growth": GROWTH,
            "counts": {str(b): n for b, n in sorted(self.counts.items())},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Histogram:
        """A histogram written by :meth:`to_json`; ValueError for another bucket layout."""
        if doc.get("lowest") != LOWEST_MS or doc.get("growth") != GROWTH:
            raise ValueError(
                f"histogram buckets differ: lowest {doc.get('lowest')}, growth "
                f"{doc.get('growth')} (this version: {LOWEST_MS}, {GROWTH})"
            )
        counts = doc.get("counts")
        if not isinstance(counts, Mapping):
            raise ValueError("histogram without counts")
        return cls({int(b): int(n) for b, n in counts.items()})

"""The latency histograms the load generators keep in their JSON, and how shards merge."""

from __future__ import annotations

import random

import pytest

from benchmarks.common import percentile
from benchmarks.histogram import GROWTH, Histogram


def test_percentiles_are_within_one_bucket_of_the_exact_ones() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(1.5, 1.0) for _ in range(20_000)]
    h = Histogram.of(values)
    assert h.count == len(values)
    for q in (50, 90, 99, 99.9, 100):
        exact = percentile(values, q)
        assert exact is not None
        got = h.percentile(q)
        assert got is not None
        assert exact <= got <= exact * GROWTH * (1 + 1e-9), q
    assert Histogram().percentile(99) is None


def test_merged_shards_read_as_one_run() -> None:
    rng = random.Random(3)
    a = [rng.uniform(0.5, 5) for _ in range(3000)]
    b = [rng.uniform(20, 80) for _ in range(1000)]  # a slower shard
    merged = Histogram.of(a).add(Histogram.of(b))
    whole = Histogram.of(a + b)
    assert merged.counts == whole.counts
    for q in (50, 75, 99):
        assert merged.percentile(q) == whole.percentile(q)
    # Not what averaging the shards' p99s would say.
    assert merged.percentile(50) != pytest.approx(
        ((Histogram.of(a).percentile(50) or 0) + (Histogram.of(b).percentile(50) or 0)) / 2
    )


def test_json_round_trip_and_foreign_buckets_refused() -> None:
    h = Histogram.of([0.0005, 1.0, 1.0, 250.0])
    doc = h.to_json()
    assert Histogram.from_json(doc).counts == h.counts
    assert h.cdf()[-1][1] == 1.0
    with pytest.raises(ValueError, match="buckets differ"):
        Histogram.from_json({**doc, "growth": 1.02})
    with pytest.raises(ValueError, match="without counts"):
        Histogram.from_json({**doc, "counts": None})

"""Rates in ``call.stats``: bits per second between readings of a byte counter."""

from __future__ import annotations

from sfu.stats import RateMeter, bitrate_bps


def test_rate_between_readings() -> None:
    assert bitrate_bps(0, 125_000, 1.0) == 1_000_000
    assert bitrate_bps(125_000, 250_000, 2.0) == 500_000
    assert bitrate_bps(100, 100, 1.0) == 0
    assert bitrate_bps(0, 1000, 0.0) == 0  # two readings at once: no rate to tell


def test_a_counter_that_went_back_is_counted_from_zero_never_negative() -> None:
    # A per-layer counter read before a simulcast switch and the next layer's after it
    # gave -159713 bps once; a replaced counter counts what it holds, over the interval.
    assert bitrate_bps(400_000, 20_000, 2.0) == 80_000
    assert bitrate_bps(400_000, 0, 2.0) == 0


def test_meter_reads_each_counter_from_its_previous_reading() -> None:
    meter = RateMeter()
    # The first reading measures from the track's start.
    assert meter.rate("out:p1:t", 50_000, 11.0, 10.0) == 400_000
    assert meter.rate("out:p1:t", 75_000, 12.0, 10.0) == 200_000
    assert meter.rate("out:p1:u", 10_000, 12.0, 11.0) == 80_000  # another counter, apart
    assert meter.rate("out:p1:t", 5_000, 13.0, 10.0) == 40_000
    meter.forget("out:p1:")
    assert meter.rate("out:p1:t", 80_000, 14.0, 10.0) == 160_000

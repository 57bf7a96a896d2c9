"""The room-size sweep's plan and its fit of server CPU per message."""

from __future__ import annotations

import pytest

from benchmarks.chat_sweep import (
    SweepPoint,
    fit,
    message_rate,
    parse_sizes,
    rooms,
    sweep_summary,
)


def point(size: int, messages: int, us_fixed: float, us_delivery: float) -> SweepPoint:
    deliveries = messages * (size - 1)
    cpu = (us_fixed * messages + us_delivery * deliveries) / 1e6
    return SweepPoint(size=size, messages=messages, deliveries=deliveries, server_cpu_s=cpu)


def test_fit_recovers_fixed_and_per_delivery_cost() -> None:
    points = [point(s, 1000, 700.0, 17.0) for s in (2, 10, 100, 500)]
    fixed, per_delivery = fit(points) or (0.0, 0.0)
    assert fixed == pytest.approx(700.0)
    assert per_delivery == pytest.approx(17.0)


def test_fit_needs_two_sizes() -> None:
    assert fit([point(2, 100, 500.0, 10.0)]) is None
    assert fit([]) is None


def test_summary_compares_with_the_bare_relay() -> None:
    ours = [point(s, 500, 600.0, 20.0) for s in (2, 10, 100)]
    bare = [point(s, 500, 300.0, 16.0) for s in (2, 10, 100)]
    figures = sweep_summary(ours, bare)
    assert figures["fixed_vs_bare"] == pytest.approx(2.0)
    assert figures["delivery_vs_bare"] == pytest.approx(1.25)
    # Rooms of 2: 620 µs per message.
    assert figures["one_to_one_msgs_per_core_s"] == pytest.approx(1e6 / 620)


def test_a_baseline_whose_points_came_out_level_gives_no_ratio() -> None:
    ours = [point(s, 500, 600.0, 20.0) for s in (2, 10)]
    bare = [point(2, 500, 300.0, 0.0), point(10, 500, 300.0 - 1e-9, 0.0)]
    figures = sweep_summary(ours, bare)
    assert figures["delivery_vs_bare"] is None  # not ~-1e10 from a slope of float noise
    assert figures["fixed_vs_bare"] == pytest.approx(2.0)


def test_plan_fills_small_rooms_and_slows_large_ones() -> None:
    assert rooms(2) == (2,) * 20
    assert rooms(500) == (500,)
    assert message_rate(2, 400, 8000) == 400
    assert message_rate(101, 400, 8000) == 80


@pytest.mark.parametrize("text", ["", "2,x", "1,10", "2,2", "2,5000"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="room sizes"):
        parse_sizes(text)


def test_sizes_parse() -> None:
    assert parse_sizes("2,10,100,500") == (2, 10, 100, 500)

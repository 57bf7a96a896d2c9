"""The room-size sweep's plan and its fit of server CPU (per message, delivery and second)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from benchmarks.chat_sweep import (
    SweepPoint,
    fit,
    message_rate,
    one_to_one,
    one_to_one_lines,
    parse_sizes,
    plan,
    rooms,
    sweep_summary,
    sweep_table,
)

SECONDS = 16.0


def point(
    size: int,
    rate: float,
    us_message: float,
    us_delivery: float,
    ms_second: float = 0.0,
    seconds: float = SECONDS,
) -> SweepPoint:
    """What the servers spend on rooms of ``size`` at ``rate`` messages/s, by the model."""
    messages = round(rate * seconds)
    deliveries = messages * (size - 1)
    cpu = (us_message * messages + us_delivery * deliveries) / 1e6 + ms_second * seconds / 1e3
    return SweepPoint(
        size=size,
        messages=messages,
        deliveries=deliveries,
        server_cpu_s=cpu,
        seconds=seconds,
        rate=rate,
    )


def planned(
    sizes: tuple[int, ...], us_message: float, us_delivery: float, ms_second: float
) -> list[SweepPoint]:
    return [
        point(s.size, s.rate, us_message, us_delivery, ms_second) for s in plan(sizes, 400, 8000)
    ]


def test_fit_recovers_the_three_costs_from_the_planned_sweep() -> None:
    got = fit(planned((2, 10, 100, 500), 450.0, 13.0, 6.0))
    assert got is not None
    assert got.us_per_message == pytest.approx(450.0, rel=1e-3)
    assert got.us_per_delivery == pytest.approx(13.0, rel=1e-3)
    assert got.ms_per_second == pytest.approx(6.0, rel=1e-3)


def test_time_based_cpu_is_not_read_as_a_cost_of_delivering() -> None:
    # The earlier sweep's steps (rooms of 100 and 500 slowed to 8,000 deliveries/s) with
    # 6 ms/s of timers: its fit of µs per message over deliveries per message read the timers
    # as per delivery. The planned steps (one rate for every size) do not.
    old = [point(s, message_rate(s, 400, 8000), 450.0, 13.0, 6.0) for s in (2, 10, 100, 500)]
    xs = [p.deliveries_per_message for p in old]
    ys = [p.us_per_message or 0.0 for p in old]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    old_slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    assert old_slope > 13.5  # ~0.7 µs per delivery that no delivery caused
    got = fit(planned((2, 10, 100, 500), 450.0, 13.0, 6.0))
    assert got is not None
    assert got.us_per_delivery == pytest.approx(13.0, rel=1e-3)


@pytest.mark.parametrize(
    "timers",
    [
        lambda rate: 6.0,
        # The send counters' reconcile runs only in the 50 ms in which someone sent: fewer
        # times per second at low rates. Not a constant per second, but the same in every
        # step at the sweep's rate.
        lambda rate: 2.0 + 4.0 * min(1.0, rate / 20),
    ],
)
def test_the_cost_of_a_delivery_holds_whatever_the_timers_cost(
    timers: Callable[[float], float],
) -> None:
    points = [
        point(s.size, s.rate, 450.0, 13.0, timers(s.rate))
        for s in plan((2, 10, 100, 500), 400, 8000)
    ]
    got = fit(points)
    assert got is not None
    assert got.us_per_delivery == pytest.approx(13.0, rel=1e-3)


def test_noise_in_one_point_moves_the_fit_by_its_own_size_only() -> None:
    points = planned((2, 10, 100, 500), 450.0, 13.0, 6.0)
    big = points[-1]
    assert big.size == 500
    # 1% more CPU in the rooms of 500 (~1.3 ms/s of ~120 ms/s).
    points[-1] = SweepPoint(
        size=big.size,
        messages=big.messages,
        deliveries=big.deliveries,
        server_cpu_s=big.server_cpu_s * 1.01,
        seconds=big.seconds,
        rate=big.rate,
    )
    got = fit(points)
    assert got is not None
    assert 13.0 < got.us_per_delivery < 13.0 * 1.015


def test_one_to_one_rooms_off_the_line_of_the_groups() -> None:
    # Rooms of 2 are direct conversations, the others groups: say a direct message costs
    # 100 µs less. The per-message cost and the timers come from the rooms of 2 at their two
    # rates alone, so they are the direct conversation's, not pulled by the groups' line.
    points = planned((2, 10, 100, 500), 450.0, 13.0, 6.0)
    points = [point(p.size, p.rate, 350.0, 13.0, 6.0) if p.size == 2 else p for p in points]
    got = fit(points)
    assert got is not None
    assert got.us_per_message == pytest.approx(350.0, rel=0.02)
    assert got.ms_per_second == pytest.approx(6.0, rel=0.02)
    # The slope still mostly from the large rooms: within 0.2 µs.
    assert got.us_per_delivery == pytest.approx(13.0, abs=0.2)


def test_messages_dearer_one_at_a_time_count_as_time_not_as_deliveries() -> None:
    # 300 µs more per message at the sweep's 16 messages/s than in a stream (the process
    # wakes for each): the same in every step at that rate, so not a delivery cost; the
    # model reads it as ~4.8 ms/s of time-based CPU.
    steps = plan((2, 10, 100, 500), 400, 8000)
    points = [point(s.size, s.rate, 450.0 + (0.0 if s.fast else 300.0), 13.0, 6.0) for s in steps]
    got = fit(points)
    assert got is not None
    assert got.us_per_delivery == pytest.approx(13.0, rel=1e-3)
    common = steps[-1].rate
    extra = 300.0 * common / 1e3  # ms/s
    assert got.ms_per_second == pytest.approx(6.0 + extra * 400 / (400 - common), rel=1e-2)
    # And the per-message cost a little below the stream's (12.5 µs of the 300 read as time).
    assert got.us_per_message == pytest.approx(450.0 - 300.0 * common / (400 - common), rel=1e-3)


def test_one_rate_gives_no_per_second_term() -> None:
    # Every step at one rate: the timers cannot be told from the messages, and the
    # per-message cost holds them, spread over the rate's messages.
    points = [point(s, 200, 450.0, 13.0, 6.0) for s in (2, 10)]
    got = fit(points)
    assert got is not None
    assert got.ms_per_second is None
    assert got.us_per_delivery == pytest.approx(13.0)
    assert got.us_per_message == pytest.approx(450.0 + 6000.0 / 200)


def test_fit_needs_two_room_sizes() -> None:
    assert fit([point(2, 100, 500.0, 10.0)]) is None
    assert fit([]) is None
    # Two rates of one size: the per-message cost and the timers, but no delivery cost.
    assert fit([point(2, 16, 500.0, 10.0, 6.0), point(2, 400, 500.0, 10.0, 6.0)]) is None
    # A point that sent nothing (its step failed) is left out, not divided by.
    empty = SweepPoint(size=100, messages=0, deliveries=0, server_cpu_s=0.0, seconds=0, rate=100)
    assert fit([point(2, 100, 500.0, 10.0), empty]) is None


def test_summary_compares_with_the_bare_relay() -> None:
    ours = planned((2, 10, 100), 600.0, 20.0, 6.0)
    bare = planned((2, 10, 100), 300.0, 16.0, 2.0)
    figures = sweep_summary(ours, bare)
    assert figures["fixed_vs_bare"] == pytest.approx(2.0)
    assert figures["delivery_vs_bare"] == pytest.approx(1.25)
    assert figures["ms_per_second"] == pytest.approx(6.0)
    assert figures["bare_ms_per_second"] == pytest.approx(2.0)
    # Rooms of 2 at 400 messages/s, what one core-second carries there: 600 + 20 µs, and the
    # timers' 6 ms/s over 400 messages (15 µs).
    assert figures["one_to_one_msgs_per_core_s"] == pytest.approx(1e6 / 635)
    # The relay's same step: 300 + 16 µs and its 2 ms/s over 400 messages (5 µs).
    assert figures["bare_one_to_one_msgs_per_core_s"] == pytest.approx(1e6 / 321)
    assert figures["one_to_one_vs_bare"] == pytest.approx(635 / 321)


def test_summary_without_the_relay_s_rooms_of_2_has_no_one_to_one_ratio() -> None:
    ours = planned((2, 10, 100), 600.0, 20.0, 6.0)
    figures = sweep_summary(
        ours, [p for p in planned((2, 10, 100), 300.0, 16.0, 2.0) if p.size > 2]
    )
    assert figures["one_to_one_msgs_per_core_s"] == pytest.approx(1e6 / 635)
    assert figures["bare_one_to_one_msgs_per_core_s"] is None
    assert figures["one_to_one_vs_bare"] is None


def test_the_one_to_one_step_splits_into_node_and_redis_and_redis_by_command() -> None:
    ours, bare = planned((2, 10), 600.0, 20.0, 6.0), planned((2, 10), 300.0, 16.0, 2.0)
    two = one_to_one(ours)
    assert two is not None and two.messages == 6400
    # Of its 635 µs a message, Redis took 160: a script per message (its commands inside,
    # counted under their own names too) and a read of the log every 100 messages.
    ours[ours.index(two)] = dataclasses.replace(
        two,
        redis_cpu_s=160e-6 * two.messages,
        redis_commands={
            "evalsha": (6400, 6400 * 70),
            "xadd": (6400, 6400 * 6),
            "xread": (64, 64 * 900),
        },
    )
    figures = sweep_summary(ours, bare)
    assert figures["one_to_one_redis_us_per_message"] == pytest.approx(160)
    assert figures["one_to_one_node_us_per_message"] == pytest.approx(635 - 160)
    # The relay's Redis was not read: no split.
    assert figures["bare_one_to_one_redis_us_per_message"] is None
    read = one_to_one(ours)
    assert read is not None
    costs = read.command_costs()
    assert list(costs) == ["evalsha", "xread", "xadd"]  # the costliest first
    assert costs["evalsha"] == pytest.approx(
        {"per_message": 1.0, "us_per_call": 70.0, "us_per_message": 70.0}
    )
    assert costs["xread"] == pytest.approx(
        {"per_message": 0.01, "us_per_call": 900.0, "us_per_message": 9.0}
    )
    [line] = one_to_one_lines(ours, bare, top=2)
    assert line.startswith("rooms of 2 at 400/s, huddle: node 475 + Redis 160 µs/msg")
    assert line.endswith("evalsha 70.0 x 1.00, xread 900.0 x 0.01")
    assert figures["one_to_one_archive_us_per_message"] is None  # not read


def test_the_one_to_one_node_figure_says_what_archiving_took_of_it() -> None:
    ours, bare = planned((2, 10), 600.0, 20.0, 6.0), planned((2, 10), 300.0, 16.0, 2.0)
    two = one_to_one(ours)
    assert two is not None
    ours[ours.index(two)] = dataclasses.replace(
        two, redis_cpu_s=160e-6 * two.messages, archive_cpu_s=35e-6 * two.messages
    )
    figures = sweep_summary(ours, bare)
    assert figures["one_to_one_archive_us_per_message"] == pytest.approx(35)
    assert figures["one_to_one_node_us_per_message"] == pytest.approx(635 - 160)
    [line] = one_to_one_lines(ours, bare)
    assert line == "rooms of 2 at 400/s, huddle: node 475 (of it archiving 35) + Redis 160 µs/msg"


def test_ejabberd_s_rooms_of_2_give_the_one_to_one_ratio_with_it() -> None:
    ours, bare = planned((2, 10), 600.0, 20.0, 6.0), planned((2, 10), 300.0, 16.0, 2.0)
    # ejabberd runs the rooms of 2 only: 420 µs a message at 400/s.
    peer = [p for p in planned((2, 10), 400.0, 20.0, 0.0) if p.size == 2]
    figures = sweep_summary(ours, bare, peer)
    assert figures["ejabberd_one_to_one_msgs_per_core_s"] == pytest.approx(1e6 / 420)
    assert figures["one_to_one_vs_ejabberd"] == pytest.approx(635 / 420)
    assert sweep_summary(ours, bare)["one_to_one_vs_ejabberd"] is None
    table = sweep_table(ours, bare, peer)
    assert table[0].endswith("| ejabberd µs/msg")
    rows = {tuple(c.strip() for c in row.split("|")[:2]): row for row in table[1:]}
    assert rows[("2", "400.0")].endswith("|             420")
    assert rows[("10", "400.0")].endswith("|               -")  # no groups on ejabberd
    assert "ejabberd" not in sweep_table(ours, bare)[0]
    assert one_to_one_lines(ours, bare, peer)[-1] == (
        "rooms of 2 at 400/s, ejabberd: 420 µs/msg (its processes; it stores nothing)"
    )


def test_one_to_one_is_the_rooms_of_2_at_their_highest_rate() -> None:
    points = planned((2, 10, 500), 600.0, 20.0, 6.0)
    two = one_to_one(points)
    assert two is not None and two.rate == 400
    assert one_to_one(planned((10, 100), 600.0, 20.0, 6.0)) is None


def test_a_baseline_whose_points_came_out_level_gives_no_ratio() -> None:
    ours = [point(s, 200, 600.0, 20.0) for s in (2, 10)]
    level = SweepPoint(
        size=10, messages=3200, deliveries=28800, server_cpu_s=0.96, seconds=16, rate=200
    )
    bare = [point(2, 200, 300.0, 0.0), level]
    figures = sweep_summary(ours, bare)
    assert figures["delivery_vs_bare"] is None  # not ~-1e10 from a slope of float noise
    assert figures["fixed_vs_bare"] == pytest.approx(2.0)


def test_plan_runs_every_size_at_the_rate_the_largest_can_take() -> None:
    steps = plan((2, 10, 100, 500), 400, 8000)
    assert [(s.name, s.rate) for s in steps] == [
        ("2r400", 400),
        ("2", 8000 / 499),
        ("10", 8000 / 499),
        ("100", 8000 / 499),
        ("500", 8000 / 499),
    ]
    # The same clients in every step: those of the largest room.
    assert [len(s.rooms) for s in steps] == [250, 250, 50, 5, 1]
    assert {sum(s.rooms) for s in steps} == {500}
    # Deliveries/s stay within the cap.
    assert all(s.rate * (s.size - 1) <= 8000 for s in steps)


def test_plan_of_sizes_that_all_take_the_full_rate_has_one_rate() -> None:
    steps = plan((2, 10), 200, 8000)
    assert [(s.name, s.rate, s.rooms) for s in steps] == [
        ("2", 200, (2,) * 20),
        ("10", 200, (10,) * 4),
    ]
    # Rates too close to be told apart give no extra step either.
    assert [s.name for s in plan((2, 10), 200, 9 * 150)] == ["2", "10"]
    assert [s.name for s in plan((2, 10), 200, 9 * 100)] == ["2r200", "2", "10"]


def test_rooms_and_message_rate() -> None:
    assert rooms(2) == (2,) * 20
    assert rooms(500) == (500,)
    assert rooms(3, 500) == (3,) * 167
    assert message_rate(2, 400, 8000) == 400
    assert message_rate(101, 400, 8000) == 80


def test_table_has_a_row_per_step() -> None:
    ours = planned((2, 500), 600.0, 20.0, 6.0)
    lines = sweep_table(ours, planned((2, 500), 300.0, 16.0, 2.0))
    assert len(lines) == 1 + 3
    assert lines[1].split("|")[1].strip() == "400.0"


@pytest.mark.parametrize("text", ["", "2,x", "1,10", "2,2", "2,5000"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="room sizes"):
        parse_sizes(text)


def test_sizes_parse() -> None:
    assert parse_sizes("2,10,100,500") == (2, 10, 100, 500)

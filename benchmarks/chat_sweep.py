"""Room-size sweep of the chat load benchmark: server CPU per message, split in three.

``python -m benchmarks.chat_load --room-sizes 2,10,100,500`` runs every room size at one
offered message rate, the sweep's rate (the highest that the largest rooms can take within
``--max-deliveries``, see :func:`plan`), each with the same number of clients connected, on
Huddle (one node) and on the bare relay in the same run. When the smallest rooms can take more
(rooms of 2 at ``--message-rate``), they run once more at that rate. The CPU the servers (node
and its Redis, or the relay and its Redis) spend in a window is fitted as
``per_message x messages + per_delivery x deliveries + per_second x seconds``: the first is
what every message costs before any delivery (request, storage, reply, echo), the second the
cost of each member reached, the third what costs time and not messages (timers: the send
counters' reconcile, the archiver's passes, Redis's cron, pings and presence refreshes; and
what messages cost more when they come one at a time to an idle server than in a stream,
which the model cannot tell from a timer).

Why the design: a message to a room of s members makes s - 1 deliveries, and the steps with
the same message rate, the same clients and the same window differ only in deliveries, so the
slope over them is the cost of a delivery whatever the time-based costs are (they are the
same in each). The earlier sweep ran large rooms at fewer messages per second than small ones
(the deliveries cap): a fit of µs per message over deliveries per message then booked every
millisecond per second of timers as ~0.12 µs per delivery (benchmarks/README.md, "fourth
pass"). The smallest rooms at two rates differ only in messages per second: that pair tells
the per-message cost from the time-based one (see :func:`fit`).

Pure: the runner in benchmarks.chat_load measures the points, this module plans and fits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from benchmarks.common import goal, ratio

# Each step connects at least this many clients, and as many as the largest room holds: every
# step has the same clients connected, so that what each connection costs over time (pings,
# presence refreshes) is the same in each and not read as a cost of delivering.
SWEEP_CLIENTS: Final = 40
# Redis's commands shown for the one-to-one step, the costliest first.
COMMANDS_SHOWN: Final = 6
DEFAULT_MESSAGE_RATE: Final = 400.0  # messages/s of the smallest rooms' extra step
# Deliveries/s at most, so that large rooms measure the server, not the drivers.
DEFAULT_MAX_DELIVERIES: Final = 8000.0
# Offered message rates closer than this factor are one rate: the fit has no per-second term.
DISTINCT_RATES: Final = 1.5

TARGET_FIXED_VS_BARE: Final = 2.0
TARGET_DELIVERY_VS_BARE: Final = 1.2
TARGET_ONE_TO_ONE: Final = 3000.0


@dataclass(frozen=True)
class SweepStep:
    """One step of the sweep: ``rooms`` (their sizes) at ``rate`` messages/s together."""

    size: int
    rooms: tuple[int, ...]
    rate: float
    fast: bool = False  # the smallest rooms' step above the sweep's rate

    @property
    def name(self) -> str:
        """``2`` at the sweep's rate, ``2r400`` for the smallest rooms' faster step."""
        return f"{self.size}r{round(self.rate)}" if self.fast else f"{self.size}"


@dataclass(frozen=True)
class SweepPoint:
    """One step on one target: what was sent and what the servers spent on it."""

    size: int
    messages: int
    deliveries: int
    server_cpu_s: float  # node (or relay) and its Redis, over the paced window
    seconds: float  # the paced window
    rate: float  # messages/s offered
    # Of server_cpu_s, Redis's; and what it ran, by command: calls and microseconds (None:
    # not read, e.g. a run on a cluster).
    redis_cpu_s: float | None = None
    redis_commands: dict[str, tuple[int, int]] | None = None
    # Of the node's CPU, what archiving took (its /metrics; None: a baseline, or not read).
    archive_cpu_s: float | None = None

    @property
    def deliveries_per_message(self) -> float:
        return self.deliveries / self.messages if self.messages else 0.0

    @property
    def us_per_message(self) -> float | None:
        return self.server_cpu_s * 1e6 / self.messages if self.messages else None

    @property
    def redis_us_per_message(self) -> float | None:
        if self.redis_cpu_s is None or not self.messages:
            return None
        return self.redis_cpu_s * 1e6 / self.messages

    @property
    def node_us_per_message(self) -> float | None:
        if self.redis_cpu_s is None or not self.messages:
            return None
        return (self.server_cpu_s - self.redis_cpu_s) * 1e6 / self.messages

    @property
    def archive_us_per_message(self) -> float | None:
        if self.archive_cpu_s is None or not self.messages:
            return None
        return self.archive_cpu_s * 1e6 / self.messages

    def command_costs(self) -> dict[str, dict[str, float]]:
        """What Redis ran per message, by command, costliest first: calls per message, µs
        per call and per message. A script's time holds the commands it ran, which are
        counted under their own names too; what no command shows (reading requests,
        writing replies and what subscribers receive, the append-only file) is
        ``redis_us_per_message`` less the commands run from outside a script."""
        if not self.redis_commands or not self.messages:
            return {}
        n = self.messages
        return {
            name: {
                "per_message": calls / n,
                "us_per_call": usec / calls,
                "us_per_message": usec / n,
            }
            for name, (calls, usec) in sorted(
                self.redis_commands.items(), key=lambda kv: (-kv[1][1], kv[0])
            )
        }


@dataclass(frozen=True)
class Fit:
    """Server CPU = per_message x messages + per_delivery x deliveries + per_second x s."""

    us_per_message: float
    us_per_delivery: float
    # None when every point ran at one message rate: the per-message cost then holds the
    # time-based costs too, spread over that rate's messages.
    ms_per_second: float | None


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
    """Messages/s rooms of ``size`` can take: ``rate``, or less when its deliveries would
    exceed ``max_deliveries`` per second."""
    return min(rate, max_deliveries / (size - 1))


def plan(sizes: Sequence[int], rate: float, max_deliveries: float) -> list[SweepStep]:
    """The steps of a sweep: the smallest rooms at the highest rate they can take (when it is
    above the sweep's), then every size at the sweep's rate (what the largest can take), each
    step with the same clients (those of the largest room, at least SWEEP_CLIENTS)."""
    clients = max(SWEEP_CLIENTS, *sizes)
    common = min(message_rate(s, rate, max_deliveries) for s in sizes)
    smallest = min(sizes)
    fast = message_rate(smallest, rate, max_deliveries)
    steps = [SweepStep(s, rooms(s, clients), common) for s in sizes]
    if fast >= common * DISTINCT_RATES:
        steps.insert(0, SweepStep(smallest, rooms(smallest, clients), fast, fast=True))
    return steps


def fit(points: Sequence[SweepPoint]) -> Fit | None:
    """The three costs, each from a comparison in which only its own quantity changes.

    - Per delivery: the steps at the sweep's rate (the lowest offered) have the same
      messages/s, clients and window; least squares of their CPU per second over messages/s
      and deliveries/s (no constant: with one rate it would be the same column) gives the
      cost of a delivery, and CPU per message at that rate before any delivery.
    - Per message and per second: the same room size at two rates (DISTINCT_RATES apart; the
      plan's smallest rooms) differ only in messages/s: the CPU one more message per second
      adds, less its deliveries, is the cost of a message; what the slower step spent beyond
      its messages and deliveries is the per-second cost. Without such a pair, the per-message
      cost is the one at the sweep's rate, time-based costs included, and per second is None.

    None when the points do not tell a delivery from a message (fewer than two distinct
    deliveries per message at the sweep's rate)."""
    used = [p for p in points if p.messages > 0 and p.seconds > 0]
    if not used:
        return None
    lowest = min(p.rate for p in used)
    slow = [p for p in used if p.rate < lowest * DISTINCT_RATES]
    if len({p.deliveries_per_message for p in slow}) < 2:
        return None
    design = np.array([[p.messages / p.seconds, p.deliveries / p.seconds] for p in slow])
    cores = np.array([p.server_cpu_s / p.seconds for p in slow])
    (per_message, per_delivery), *_ = np.linalg.lstsq(design, cores, rcond=None)
    pair = _rate_pair(used, lowest)
    if pair is None:
        return Fit(float(per_message) * 1e6, float(per_delivery) * 1e6, None)
    faster = pair[1]
    m_slow, m_fast = (p.messages / p.seconds for p in pair)
    cores_slow, cores_fast = (p.server_cpu_s / p.seconds for p in pair)
    deliveries = faster.deliveries_per_message
    marginal = (cores_fast - cores_slow) / (m_fast - m_slow)  # CPU-s per message
    message = marginal - float(per_delivery) * deliveries
    per_second = cores_slow - marginal * m_slow
    return Fit(message * 1e6, float(per_delivery) * 1e6, per_second * 1e3)


def _rate_pair(points: Sequence[SweepPoint], lowest: float) -> tuple[SweepPoint, SweepPoint] | None:
    """A step at the sweep's rate and one of the same room size at a distinct higher rate
    (the highest such), the smallest size first."""
    for size in sorted({p.size for p in points}):
        same = [p for p in points if p.size == size]
        slow = [p for p in same if p.rate < lowest * DISTINCT_RATES]
        fast = [p for p in same if p.rate >= lowest * DISTINCT_RATES]
        if slow and fast:
            return slow[0], max(fast, key=lambda p: p.rate)
    return None


# A fitted baseline cost below this (µs) is noise, not a cost to compare with: when the bare
# relay's points came out level, its per-delivery cost fitted to about zero and the ratio
# over it read -6.6e14.
MIN_BASELINE_US: Final = 0.1


def _versus(ours: float, theirs: float) -> float | None:
    return ratio(ours, theirs) if theirs >= MIN_BASELINE_US else None


def one_to_one(points: Sequence[SweepPoint]) -> SweepPoint | None:
    """The rooms of 2 at the highest rate they ran at."""
    twos = [p for p in points if p.size == 2 and p.messages > 0]
    return max(twos, key=lambda p: p.rate) if twos else None


def sweep_summary(
    huddle: Sequence[SweepPoint],
    bare: Sequence[SweepPoint],
    ejabberd: Sequence[SweepPoint] = (),
) -> dict[str, float | None]:
    ours, theirs = fit(huddle), fit(bare)
    two, bare_two, peer_two = one_to_one(huddle), one_to_one(bare), one_to_one(ejabberd)
    per_message = two.us_per_message if two is not None else None
    bare_per_message = bare_two.us_per_message if bare_two is not None else None
    peer_per_message = peer_two.us_per_message if peer_two is not None else None
    return {
        "fixed_us_per_message": ours.us_per_message if ours else None,
        "us_per_delivery": ours.us_per_delivery if ours else None,
        "ms_per_second": ours.ms_per_second if ours else None,
        "bare_fixed_us_per_message": theirs.us_per_message if theirs else None,
        "bare_us_per_delivery": theirs.us_per_delivery if theirs else None,
        "bare_ms_per_second": theirs.ms_per_second if theirs else None,
        "fixed_vs_bare": _versus(ours.us_per_message, theirs.us_per_message)
        if ours and theirs
        else None,
        "delivery_vs_bare": _versus(ours.us_per_delivery, theirs.us_per_delivery)
        if ours and theirs
        else None,
        "one_to_one_msgs_per_core_s": 1e6 / per_message if per_message else None,
        # The same step on the relay, and Huddle's cost per message there over the relay's:
        # the one-to-one figure against a baseline of the same run, which moves with it
        # (absolute figures on one kind of machine differ by a fifth between runs).
        "bare_one_to_one_msgs_per_core_s": 1e6 / bare_per_message if bare_per_message else None,
        "one_to_one_vs_bare": ratio(per_message, bare_per_message),
        # Where that step's CPU went: the node (or relay) and its Redis, per message.
        "one_to_one_node_us_per_message": two.node_us_per_message if two else None,
        "one_to_one_redis_us_per_message": two.redis_us_per_message if two else None,
        # Of the node's: archiving (the archiver's task and SQLite's threads).
        "one_to_one_archive_us_per_message": two.archive_us_per_message if two else None,
        "bare_one_to_one_node_us_per_message": bare_two.node_us_per_message if bare_two else None,
        "bare_one_to_one_redis_us_per_message": bare_two.redis_us_per_message if bare_two else None,
        # ejabberd's rooms of 2 (--ejabberd) at the same rate, its process tree's CPU, and
        # Huddle's cost per message there over ejabberd's (below 1: Huddle spends less).
        "ejabberd_one_to_one_msgs_per_core_s": 1e6 / peer_per_message if peer_per_message else None,
        "one_to_one_vs_ejabberd": ratio(per_message, peer_per_message),
    }


def one_to_one_lines(
    huddle: Sequence[SweepPoint],
    bare: Sequence[SweepPoint],
    ejabberd: Sequence[SweepPoint] = (),
    top: int = COMMANDS_SHOWN,
) -> list[str]:
    """The one-to-one step's CPU per message, node and Redis, and Redis's costliest
    commands, for each target that read them; ejabberd's, its processes'."""
    lines = []
    peer = one_to_one(ejabberd)
    for label, point in (("huddle", one_to_one(huddle)), ("bare", one_to_one(bare))):
        if point is None or point.node_us_per_message is None:
            continue
        redis_us = point.redis_us_per_message or 0.0
        costs = point.command_costs()
        shown = ", ".join(
            f"{name} {c['us_per_call']:.1f} x {c['per_message']:.2f}"
            for name, c in list(costs.items())[:top]
        )
        archive_us = point.archive_us_per_message
        lines.append(
            f"rooms of 2 at {point.rate:,.0f}/s, {label}: node {point.node_us_per_message:,.0f}"
            + (f" (of it archiving {archive_us:,.0f})" if archive_us is not None else "")
            + f" + Redis {redis_us:,.0f} µs/msg"
            + (f"; Redis commands (µs per call x calls per message): {shown}" if shown else "")
        )
    if peer is not None and peer.us_per_message is not None:
        lines.append(
            f"rooms of 2 at {peer.rate:,.0f}/s, ejabberd: {peer.us_per_message:,.0f} µs/msg "
            "(its processes; it stores nothing)"
        )
    return lines


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


def sweep_table(
    huddle: Sequence[SweepPoint], bare: Sequence[SweepPoint], ejabberd: Sequence[SweepPoint] = ()
) -> list[str]:
    """A row per step: what each target spent per message (ejabberd's column, when it ran,
    for the rooms of 2; "-" for the other sizes)."""
    by_step = {(p.size, p.rate): p for p in bare}
    peer = {(p.size, p.rate): p for p in ejabberd}
    head = "room size | msgs/s | msgs | deliveries/msg | huddle µs/msg | bare µs/msg"
    lines = [head + (" | ejabberd µs/msg" if peer else "")]
    for p in huddle:
        b = by_step.get((p.size, p.rate))
        theirs = b.us_per_message if b else None
        row = (
            f"{p.size:>9} | {p.rate:>6,.1f} | {p.messages:>4} | "
            f"{p.deliveries_per_message:>14.1f} | {p.us_per_message or 0:>13,.0f} | "
            f"{theirs or 0:>11,.0f}"
        )
        if peer:
            e = peer.get((p.size, p.rate))
            cost = e.us_per_message if e else None
            row += f" | {cost:>15,.0f}" if cost is not None else f" | {'-':>15}"
        lines.append(row)
    return lines

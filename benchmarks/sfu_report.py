"""Figures of the SFU load benchmark: per-scenario results, the summary, the printed report,
and the py-spy profile of the server (``benchmarks.sfu_load`` runs the scenarios)."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from benchmarks import common
from benchmarks.common import DISTURBED, SATURATED, fmt, goal, goal_table, pct, ratio, table
from benchmarks.histogram import Histogram

TARGET_VS_JANUS: Final = 1.2
TARGET_VS_NAIVE: Final = 0.1
TARGET_LOSS_9X9: Final = 0.01
TARGET_DELAY_P99_MS_9X9: Final = 30.0
_PROBLEM_RE: Final = re.compile(r"warn|err|exception|traceback|fail", re.IGNORECASE)
_LONG_NUMBER_RE: Final = re.compile(r"\d{5,}")
_FRAME_LINE_RE: Final = re.compile(r":\d+\)$")


@dataclass
class ScenarioResult:
    target: str
    scenario: str
    publishers: int
    subscribers: int
    streams_expected: int
    streams_flowing: int = 0
    window_s: float = 0.0
    packets: int = 0
    packets_per_s: float = 0.0
    mbit_per_s: float = 0.0  # RTP payload
    packets_expected: int = 0
    loss: float | None = None  # fraction, from sequence numbers
    loss_audio: float | None = None
    loss_video: float | None = None
    # To the kernel's receive stamp at the subscriber (see benchmarks.sfu_media).
    delay_p50_ms: float | None = None
    delay_p99_ms: float | None = None
    delay_max_ms: float | None = None
    delay_over_30ms: float | None = None  # share of matched packets
    delay_stalls: list[list[float]] = field(default_factory=list)
    delay_matched: int = 0
    delay_unmatched: int = 0
    delay_unstamped: int = 0  # receptions with no kernel stamp (application time used)
    # To the time the subscribing bot's stack handled the packet: its event-loop lag added.
    app_delay_p50_ms: float | None = None
    app_delay_p99_ms: float | None = None
    server_cpu_s: float = 0.0
    server_cores: float = 0.0  # CPU seconds per second
    cpu_us_per_packet: float | None = None
    # Less the server's idle CPU: what forwarding adds per packet (small scenarios are
    # dominated by the fixed cost, large ones by this).
    marginal_us_per_packet: float | None = None
    bot_cpu_s: list[float] = field(default_factory=list)
    bot_cores: list[float] = field(default_factory=list)
    machine_busy: float = 0.0  # share of all cores
    others_busy: float = 0.0  # of that, what the measured processes do not explain
    bot_loop_lag_p99_ms: float | None = None
    bot_loop_lag_max_ms: float | None = None
    publisher_max_late_ms: float = 0.0
    publisher_resyncs: int = 0
    rtx_packets: int = 0
    setup_s: float = 0.0
    failed: str | None = None
    errors: list[str] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    # --url: packets the nodes say they forwarded in the room over the window (/metrics).
    node_packets_forwarded: float | None = None
    # Copies of the scenario's room run at once (--rooms; a shard's share with --shard), and
    # the bots (participants) in them.
    rooms: int = 1
    bots: int = 0
    # What benchmarks.merge adds across shards: packets lost and expected by kind
    # ("audio", "video"), and the delays (to the kernel stamp) as a histogram.
    loss_counts: dict[str, list[int]] = field(default_factory=dict)
    delay_histogram: dict[str, Any] | None = None
    # The wall-clock time (unix seconds) the measured window began.
    started_at: float | None = None
    # Streams that stopped before the window's end (their last packet more than STALLED_S
    # before it), and the nodes whose /metrics did not answer over the window: either fails
    # the scenario (its loss and CPU would read as healthy).
    streams_stalled: int = 0
    nodes_missing: list[str] = field(default_factory=list)


def clip_failure(text: str, limit: int = 2000) -> str:
    """A failure's text within ``limit`` characters, its head and its tail: a traceback's
    cause is its last line."""
    if len(text) <= limit:
        return text
    half = (limit - 5) // 2
    return f"{text[:half]}\n...\n{text[-half:]}"


def failure_line(text: str) -> str:
    """A failure in one line: its first line and, when a traceback follows, the cause (the
    exception its last meaningful line names)."""
    lines = [line.strip() for line in text.splitlines()]
    meaningful = [
        line
        for line in lines
        if line.strip("^~ .") and not line.startswith(("File ", "Traceback ", "The above "))
    ]
    if not meaningful:
        return text.strip()
    first, last = meaningful[0], meaningful[-1]
    return first if first == last else f"{first} ... {last}"


# --- profiling -----------------------------------------------------------------------


def _py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_server(pid: int, seconds: float, keep: Path | None = None) -> dict[str, Any]:
    """Sample the server with py-spy (if installed): the functions most often on CPU."""
    spy = _py_spy()
    if spy is None:
        return {"error": "py-spy not installed (pip install py-spy)"}
    with tempfile.TemporaryDirectory(prefix="huddle-spy-") as tmp:
        out = Path(tmp) / "stacks.txt"
        cmd = [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, round(seconds))),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "--subprocesses",
            "--output",
            str(out),
        ]
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
        if not out.exists():
            return {"error": f"py-spy: {done.stderr.strip()[-500:]}"}
        if keep is not None:
            keep.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out, keep)
        return summarize_stacks(out.read_text())


def _function(frame: str) -> str:
    """``send (sfu/aiortc_glue.py:204)`` -> ``send (sfu/aiortc_glue.py)``."""
    return _FRAME_LINE_RE.sub(")", frame)


def summarize_stacks(text: str, top: int = 15) -> dict[str, Any]:
    """Sample shares from py-spy's collapsed stacks: self time per function and per line,
    inclusive time per function. py-spy sees Python frames only: time in C code called from
    Python (SRTP, ``sendto``) counts as the caller's line, and the event loop's own C code
    (uvloop: polling, ``recvfrom``, callback dispatch) as ``Runner.run``."""
    own: Counter[str] = Counter()
    own_lines: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        # Thread names head the stack ("process 123:..." / "thread (0x...)"): not functions.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[_function(frames[-1])] += count
        own_lines[frames[-1]] += count
        for function in {_function(f) for f in frames}:
            inclusive[function] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, n / total) for name, n in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "self": share(own),
        "self_lines": share(own_lines),
        "inclusive": share(inclusive),
    }


# --- report --------------------------------------------------------------------------


def pool_rounds(rounds: Sequence[ScenarioResult]) -> ScenarioResult:
    """One scenario's rounds for one target as one result: CPU, packets and time summed (so
    CPU per packet is pooled), loss and the delay tail the worst round's, the delay median
    the median round's. A failed round makes the whole failed."""
    if len(rounds) == 1:
        return rounds[0]
    failed = next((r for r in rounds if r.failed is not None), None)
    if failed is not None:
        return dataclasses.replace(failed, errors=[e for r in rounds for e in r.errors])
    wall = sum(r.window_s for r in rounds)
    packets = sum(r.packets for r in rounds)
    cpu = sum(r.server_cpu_s for r in rounds)
    marginal = [r.marginal_us_per_packet for r in rounds]

    def worst(values: Sequence[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return max(known) if known else None

    def middle(values: Sequence[float | None]) -> float | None:
        known = sorted(v for v in values if v is not None)
        return known[len(known) // 2] if known else None

    return dataclasses.replace(
        rounds[0],
        streams_flowing=min(r.streams_flowing for r in rounds),
        window_s=wall,
        packets=packets,
        packets_expected=sum(r.packets_expected for r in rounds),
        packets_per_s=packets / wall if wall else 0.0,
        mbit_per_s=sum(r.mbit_per_s * r.window_s for r in rounds) / wall if wall else 0.0,
        loss=worst([r.loss for r in rounds]),
        loss_audio=worst([r.loss_audio for r in rounds]),
        loss_video=worst([r.loss_video for r in rounds]),
        delay_p50_ms=middle([r.delay_p50_ms for r in rounds]),
        delay_p99_ms=worst([r.delay_p99_ms for r in rounds]),
        delay_max_ms=worst([r.delay_max_ms for r in rounds]),
        delay_over_30ms=worst([r.delay_over_30ms for r in rounds]),
        delay_stalls=[s for r in rounds for s in r.delay_stalls],
        delay_matched=sum(r.delay_matched for r in rounds),
        delay_unmatched=sum(r.delay_unmatched for r in rounds),
        delay_unstamped=sum(r.delay_unstamped for r in rounds),
        app_delay_p50_ms=middle([r.app_delay_p50_ms for r in rounds]),
        app_delay_p99_ms=worst([r.app_delay_p99_ms for r in rounds]),
        server_cpu_s=cpu,
        server_cores=cpu / wall if wall else 0.0,
        cpu_us_per_packet=cpu / packets * 1e6 if packets else None,
        marginal_us_per_packet=(
            sum(m * r.packets for m, r in zip(marginal, rounds, strict=True) if m is not None)
            / packets
            if packets and None not in marginal
            else None
        ),
        bot_cpu_s=[sum(c) for c in zip(*(r.bot_cpu_s for r in rounds), strict=False)],
        bot_cores=[max(c) for c in zip(*(r.bot_cores for r in rounds), strict=False)],
        machine_busy=max(r.machine_busy for r in rounds),
        others_busy=max(r.others_busy for r in rounds),
        bot_loop_lag_p99_ms=worst([r.bot_loop_lag_p99_ms for r in rounds]),
        bot_loop_lag_max_ms=worst([r.bot_loop_lag_max_ms for r in rounds]),
        publisher_max_late_ms=max(r.publisher_max_late_ms for r in rounds),
        publisher_resyncs=sum(r.publisher_resyncs for r in rounds),
        rtx_packets=sum(r.rtx_packets for r in rounds),
        setup_s=max(r.setup_s for r in rounds),
        errors=[e for r in rounds for e in r.errors],
        profile=next((r.profile for r in rounds if r.profile), None),
        loss_counts=add_loss_counts([r.loss_counts for r in rounds]),
        delay_histogram=add_histograms([r.delay_histogram for r in rounds]),
    )


def add_loss_counts(counts: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, list[int]]:
    """[lost, expected] by kind, added up."""
    total: dict[str, list[int]] = {}
    for by_kind in counts:
        for kind, (lost, expected) in by_kind.items():
            row = total.setdefault(kind, [0, 0])
            row[0] += lost
            row[1] += expected
    return total


def add_histograms(docs: Sequence[Mapping[str, Any] | None]) -> dict[str, Any] | None:
    """The histograms' JSON added up (None when one is missing: an older result)."""
    if not docs or any(d is None for d in docs):
        return None
    total = Histogram()
    for doc in docs:
        assert doc is not None
        total = total.add(Histogram.from_json(doc))
    return total.to_json()


def round_lines(rounds: dict[str, dict[str, list[ScenarioResult]]]) -> list[str]:
    """Per target and scenario, each round's CPU per packet and delay p99."""
    lines = []
    for target, by_scenario in rounds.items():
        for name, results in by_scenario.items():
            if len(results) < 2:
                continue
            cells = ", ".join(
                "failed" if r.failed else f"{fmt(r.cpu_us_per_packet)} µs/{fmt(r.delay_p99_ms)} ms"
                for r in results
            )
            lines.append(f"rounds {target} {name} (µs/pkt / delay p99): {cells}")
    return lines


def pooled_us_per_packet(results: Sequence[ScenarioResult]) -> float | None:
    packets = sum(r.packets for r in results)
    return sum(r.server_cpu_s for r in results) / packets * 1e6 if packets else None


def _usable(result: ScenarioResult | None) -> bool:
    return result is not None and result.failed is None and result.packets > 0


def compare(
    results: dict[str, dict[str, ScenarioResult]], other: str
) -> tuple[float | None, list[str]]:
    """Huddle's CPU per forwarded packet over ``other``'s, pooled over the scenarios both ran
    (total CPU seconds / total forwarded packets): bigger scenarios weigh more."""
    ours = results.get("huddle", {})
    theirs = results.get(other, {})
    common = [s for s in ours if _usable(ours[s]) and _usable(theirs.get(s))]
    if not common:
        return None, []
    a = pooled_us_per_packet([ours[s] for s in common])
    b = pooled_us_per_packet([theirs[s] for s in common])
    return ratio(a, b), common


def summary(results: dict[str, dict[str, ScenarioResult]]) -> dict[str, float | None]:
    big = results.get("huddle", {}).get("9x9")
    usable = big is not None and _usable(big)
    return {
        "cpu_per_packet_vs_janus": compare(results, "janus")[0],
        "cpu_per_packet_vs_naive": compare(results, "naive")[0],
        "loss_9x9": big.loss if usable and big is not None else None,
        "delay_p99_ms_9x9": big.delay_p99_ms if usable and big is not None else None,
        # Not targets: the same delay to the subscribing bot's stack, and Janus's 9x9 p99.
        "app_delay_p99_ms_9x9": big.app_delay_p99_ms if usable and big is not None else None,
        "janus_delay_p99_ms_9x9": _delay_p99(results.get("janus", {}).get("9x9")),
    }


def _delay_p99(result: ScenarioResult | None) -> float | None:
    return result.delay_p99_ms if result is not None and _usable(result) else None


def targets(figures: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    goals: dict[str, tuple[str, Callable[[float], bool]]] = {
        "cpu_per_packet_vs_janus": (f"<= {TARGET_VS_JANUS}", lambda v: v <= TARGET_VS_JANUS),
        "cpu_per_packet_vs_naive": (f"<= {TARGET_VS_NAIVE}", lambda v: v <= TARGET_VS_NAIVE),
        "loss_9x9": (f"< {TARGET_LOSS_9X9}", lambda v: v < TARGET_LOSS_9X9),
        "delay_p99_ms_9x9": (
            f"< {TARGET_DELAY_P99_MS_9X9}",
            lambda v: v < TARGET_DELAY_P99_MS_9X9,
        ),
    }
    return {name: goal(figures.get(name), text, ok) for name, (text, ok) in goals.items()}


HEADER: Final = (
    "scenario",
    "target",
    "streams",
    "pkt/s",
    "Mbit/s",
    "server cores",
    "µs/pkt",
    "marginal",
    "loss",
    "delay p50 ms",
    "p99 ms",
    "in bot p99",
    "bot cores",
    "machine",
)


def result_rows(
    results: dict[str, dict[str, ScenarioResult]], scenarios: Sequence[str]
) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for scenario in scenarios:
        for target, by_scenario in results.items():
            r = by_scenario.get(scenario)
            if r is None:
                continue
            if r.failed is not None:
                rows.append((scenario, target, "failed", *["-"] * (len(HEADER) - 3)))
                continue
            rows.append(
                (
                    scenario,
                    target,
                    f"{r.streams_flowing}/{r.streams_expected}",
                    fmt(r.packets_per_s, 0),
                    fmt(r.mbit_per_s, 1),
                    fmt(r.server_cores, 2),
                    fmt(r.cpu_us_per_packet, 1),
                    fmt(r.marginal_us_per_packet, 1),
                    pct(r.loss, 2),
                    fmt(r.delay_p50_ms, 1),
                    fmt(r.delay_p99_ms, 1),
                    fmt(r.app_delay_p99_ms, 1),
                    "+".join(fmt(c, 2) for c in r.bot_cores),
                    pct(r.machine_busy),
                )
            )
    return rows


def ratio_rows(
    results: dict[str, dict[str, ScenarioResult]], scenarios: Sequence[str]
) -> list[tuple[str, ...]]:
    rows = []
    ours = results.get("huddle", {})
    for scenario in scenarios:
        h = ours.get(scenario)
        cells = [scenario]
        for other in ("janus", "naive"):
            o = results.get(other, {}).get(scenario)
            ok = _usable(h) and _usable(o) and h is not None and o is not None
            cells.append(
                fmt(ratio(h.cpu_us_per_packet, o.cpu_us_per_packet), 2)
                if ok and h is not None and o is not None
                else "-"
            )
        rows.append(tuple(cells))
    return rows


def report(
    results: dict[str, dict[str, ScenarioResult]],
    scenarios: Sequence[str],
    duration: float,
    bot_procs: int,
    missing: dict[str, str],
    versions: dict[str, str],
    idle: dict[str, float] | None = None,
    bot_nice: int = 0,
    placement: str = "",
) -> str:
    lines = [
        f"sfu_load: {duration:g} s per scenario, {bot_procs} bot process(es) at nice "
        f"+{bot_nice}, {placement + ', ' if placement else ''}"
        f"{os.cpu_count()} cores; clip VP8 640x360@30 + Opus, pre-encoded, paced",
        "targets: " + ", ".join(f"{t} ({v})" for t, v in versions.items()),
        "server idle cores: " + ", ".join(f"{t} {fmt(c, 3)}" for t, c in (idle or {}).items()),
        "streams = forwarded streams flowing/expected; pkt/s, Mbit/s (RTP payload) as received "
        "by the subscribers; server cores = CPU s/s of the server (+children); µs/pkt = server "
        "CPU per forwarded packet; marginal = the same less the server's idle CPU; loss from "
        "sequence numbers, no NACK; delay = one-way "
        "publisher's stack -> kernel receive stamp at the subscriber; in bot = the same to "
        "the subscribing bot's stack (its event-loop lag included); bot cores per bot process",
        "",
        *table(result_rows(results, scenarios), HEADER),
        "",
        "Huddle's CPU per forwarded packet over the baseline's (lower is better)",
        *table(ratio_rows(results, scenarios), ("scenario", "huddle/janus", "huddle/naive")),
    ]
    for target, reason in missing.items():
        lines.append(f"{target}: MISSING ({reason})")
    for target, by_scenario in results.items():
        for name, r in by_scenario.items():
            if r.failed:
                lines.append(f"{target} {name}: FAILED: {failure_line(r.failed)}")
            for error in sorted(set(r.errors))[:5]:
                lines.append(f"{target} {name}: {error}")
            if r.failed is None and r.others_busy >= DISTURBED:
                lines.append(
                    f"WARNING {target} {name}: other processes kept {r.others_busy:.0%} of the "
                    "machine busy; figures disturbed"
                )
            if r.failed is None and r.server_cores >= SATURATED:
                lines.append(f"{target} {name}: server saturated ({r.server_cores:.2f} cores)")
            if r.failed is None and any(c >= SATURATED for c in r.bot_cores):
                lines.append(f"{target} {name}: a bot process saturated its core (bot-bound)")
            if r.failed is None and (r.delay_over_30ms or 0) >= 0.001:
                lines.append(
                    f"{target} {name}: {pct(r.delay_over_30ms, 1)} of packets > 30 ms "
                    f"(max {fmt(r.delay_max_ms)} ms); bots' own loop lag p99/max "
                    f"{fmt(r.bot_loop_lag_p99_ms)}/{fmt(r.bot_loop_lag_max_ms)} ms; worst "
                    f"100 ms slots [s into window, late packets, max ms]: {r.delay_stalls[:3]}"
                )
            if r.publisher_resyncs:
                lines.append(
                    f"{target} {name}: starved publishers dropped their backlog "
                    f"{r.publisher_resyncs} times (max {r.publisher_max_late_ms:.0f} ms late)"
                )
            if r.profile:
                lines.extend(_profile_lines(target, name, r.profile))
    lines.extend(goal_table(targets(summary(results)), 3))
    return "\n".join(lines)


def _profile_lines(target: str, scenario: str, profile: dict[str, Any]) -> list[str]:
    if "error" in profile:
        return [f"{target} {scenario} profile: {profile['error']}"]
    lines = [
        f"{target} {scenario} profile (py-spy, Python frames; Runner.run = the event loop's "
        f"C code): {profile['samples']} samples on CPU",
    ]
    for title, key in (
        ("self", "self"),
        ("self, by line", "self_lines"),
        ("inclusive", "inclusive"),
    ):
        lines.append(f"  top {title}:")
        lines.extend(f"  {share:6.1%}  {name}" for name, share in profile[key][:12])
    return lines


def _problem_text(line: str) -> str | None:
    """Janus's and plain Python's text logs: problems only, ids folded together."""
    if _PROBLEM_RE.search(line) is None:
        return None
    return _LONG_NUMBER_RE.sub("N", line.strip())[:160]


def log_problems(path: Path | None) -> dict[str, int]:
    """Warnings and errors a server logged, counted by message (the 20 most frequent)."""
    return common.log_problems(path, _problem_text, most=20)

"""What every benchmark script shares: figures, printed tables, server logs, the command line
and the JSON document.

Each benchmark prints its tables and goals the same way and writes the same head of its
JSON document (``benchmark``, ``date``, ``machine``, then its own figures with a ``summary``),
so that they read alike and a reader of one knows how to read the others. Pure except for
the files, sockets and limits named in each function.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import math
import os
import platform
import resource
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn

# Debian's Chromium, headless, as these machines need it (shared/recipes/browser-webrtc.md):
# no sandbox (root), no background connections to the closed network. The web benchmark and
# the browser tests start from these flags.
CHROMIUM: Final = "/usr/bin/chromium"
CHROMIUM_ARGS: Final = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
# A fake camera and microphone (a test picture, a beep), granted without a prompt.
CHROMIUM_FAKE_MEDIA_ARGS: Final = (
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
)

# A process above this share of one core is taken as saturated.
SATURATED: Final = 0.85
# Processes other than ours busier than this share of the machine make a phase's figures suspect.
DISTURBED: Final = 0.15
METRICS_TIMEOUT_S: Final = 5.0
# How much of an unparsed log line, and of a parsed record's message, names a problem.
TEXT_PROBLEM_CHARS: Final = 120
RECORD_PROBLEM_CHARS: Final = 200
PROBLEM_LEVELS: Final = ("warning", "error", "critical")
# An exit status of 128 + SIGINT, as a shell reports a program stopped by Ctrl-C.
INTERRUPTED_STATUS: Final = 130

Say = Callable[[str], None]

# --- figures ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of ``values`` (``q`` in 0..100): always one of the values,
    so a p99 of few samples is a real sample, not an interpolation between two."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(len(ordered) * q / 100)) - 1]


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def ratio(ours: float | None, theirs: float | None) -> float | None:
    """``ours / theirs``, or None when either is unknown or the baseline is zero."""
    if ours is None or theirs is None or theirs == 0:
        return None
    return ours / theirs


def goal(value: float | None, target: str, ok: Callable[[float], bool]) -> dict[str, Any]:
    """One target as the JSON holds it: ``met`` is None when nothing was measured."""
    return {"target": target, "value": value, "met": None if value is None else ok(value)}


# --- printed tables ---------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def pct(share: float | None, digits: int = 0) -> str:
    return "-" if share is None else f"{share:.{digits}%}"


def table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...]) -> Iterator[str]:
    """Text columns: the first left-aligned, the others right-aligned, a rule under the header."""
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    for i, r in enumerate((header, *rows)):
        rest = [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        yield " | ".join([r[0].ljust(widths[0]), *rest]).rstrip()
        if i == 0:
            yield "-+-".join("-" * w for w in widths)


def goal_table(goals: Mapping[str, Mapping[str, Any]], digits: int) -> list[str]:
    """The closing table of a report: each target, what was measured and whether it is met."""
    verdict = {True: "yes", False: "NO", None: "-"}
    rows = [
        (name, fmt(g["value"], digits), str(g["target"]), verdict[g["met"]])
        for name, g in goals.items()
    ]
    return ["", *table(rows, ("target", "measured", "goal", "met"))]


# --- what the servers say ---------------------------------------------------------------


def _any_text(line: str) -> str | None:
    text = line.strip()
    return text[:TEXT_PROBLEM_CHARS] if text else None


def log_problems(
    path: Path | None,
    text_problem: Callable[[str], str | None] = _any_text,
    most: int | None = None,
) -> dict[str, int]:
    """Warnings and errors a server logged, counted by message (the ``most`` frequent).

    JSON lines (Huddle's log) count from level warning up; any other line is what
    ``text_problem`` makes of it, None for a line that is no problem (by default every
    line that is not blank: a traceback or a crash message)."""
    if path is None or not path.exists():
        return {}
    seen: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            problem = text_problem(line)
            if problem is not None:
                seen[problem] += 1
            continue
        if isinstance(record, dict) and record.get("level") in PROBLEM_LEVELS:
            detail = f" ({record['error']})" if "error" in record else ""
            seen[f"{record['level']}: {record.get('msg')}{detail}"[:RECORD_PROBLEM_CHARS]] += 1
    return dict(seen.most_common(most))


def command_stats(info: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """Redis's ``INFO commandstats`` reply as command -> (calls, µs)."""
    return {
        name.removeprefix("cmdstat_"): (int(value["calls"]), int(value["usec"]))
        for name, value in info.items()
        if isinstance(value, dict) and "calls" in value
    }


def node_metrics(url: str, names: tuple[str, ...]) -> dict[str, float]:
    """The samples of a node's ``/metrics`` whose names start with one of ``names``
    ({} when the node does not answer: its figures are then simply missing)."""
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=METRICS_TIMEOUT_S) as resp:
            text = resp.read().decode()
    except (OSError, urllib.error.URLError):
        return {}
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(names):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


# --- command line -----------------------------------------------------------------------


def stderr_say(began: float | None = None) -> Say:
    """Progress lines on stderr (stdout is the report), with the seconds since ``began``."""

    def say(text: str) -> None:
        stamp = "" if began is None else f"{time.monotonic() - began:5.1f} s: "
        print(f"# {stamp}{text}", file=sys.stderr, flush=True)

    return say


def loopback_url(url: str) -> str:
    """An argparse type: a URL on this machine; load never goes anywhere else."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(f"only loopback targets are allowed, not {host!r}")
    return url.rstrip("/")


def raise_fd_limit(n: int) -> int:
    """Room for N client sockets and N server sockets (children inherit the limit)."""
    want = 2 * n + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return soft
    if hard == resource.RLIM_INFINITY or hard >= want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        return want
    try:  # raising the hard limit needs privileges
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        return want
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard


def run_main(main: Callable[[], int]) -> NoReturn:
    """Exit with ``main``'s status; Ctrl-C exits 130 once the servers and drivers it started
    were stopped on the way out (every benchmark stops them in ``finally``)."""
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(INTERRUPTED_STATUS)


# --- the JSON document ------------------------------------------------------------------


def machine(**extra: Any) -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        **extra,
    }


def json_document(
    benchmark: str, figures: Mapping[str, Any], machine_extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``benchmark``, ``date`` and ``machine`` first, then the benchmark's own ``figures``,
    which hold its top-level ``summary``."""
    if "summary" not in figures:
        raise ValueError(f"{benchmark}: the JSON document needs a top-level summary")
    head = {
        "benchmark": benchmark,
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(**(machine_extra or {})),
    }
    return {**head, **figures}


def write_json(
    path: Path,
    benchmark: str,
    figures: Mapping[str, Any],
    machine_extra: Mapping[str, Any] | None = None,
    say: Say | None = None,
) -> dict[str, Any]:
    """Write the benchmark's JSON document to ``path`` (its folder made if need be)."""
    doc = json_document(benchmark, figures, machine_extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    if say is not None:
        say(f"figures written to {path}")
    return doc

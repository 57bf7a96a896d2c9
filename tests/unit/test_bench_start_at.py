"""--start-at: the wall-clock instant at which the shards of one load test begin measuring."""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time

import pytest

from benchmarks.target import MAX_START_AHEAD_S, StartMissed, start_at_of, start_instant


def test_unix_seconds_and_iso_times_are_read_as_the_same_instant() -> None:
    ahead = datetime.datetime.now(datetime.UTC).replace(microsecond=0) + datetime.timedelta(
        minutes=10
    )
    unix = ahead.timestamp()
    assert start_at_of(str(unix)) == unix
    assert start_at_of(ahead.isoformat()) == unix
    assert start_at_of(ahead.strftime("%Y-%m-%dT%H:%M:%SZ")) == unix
    # No offset: UTC, whatever this machine's zone.
    assert start_at_of(ahead.strftime("%Y-%m-%dT%H:%M:%S")) == unix
    east = ahead.astimezone(datetime.timezone(datetime.timedelta(hours=8)))
    assert start_at_of(east.isoformat()) == unix


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("soon", "not a time"),
        ("12:00:00Z", "not a time"),
        (str(time.time() - 5), "in the past"),
        ("2020-01-01T00:00:00Z", "in the past"),
        (str(time.time() + MAX_START_AHEAD_S + 3600), "h ahead"),
        ("nan", "not a time"),
        ("inf", "not a time"),
        ("-inf", "not a time"),
    ],
    # Names that do not hold the clock: pytest-xdist's workers must collect the same tests.
    ids=["word", "time-of-day", "unix-past", "iso-past", "unix-too-far", "nan", "inf", "-inf"],
)
def test_a_past_far_or_unreadable_time_is_refused(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        start_at_of(text)


def test_the_instant_on_the_monotonic_clock_and_a_missed_start() -> None:
    assert start_instant(None) is None
    when = time.time() + 2.0
    instant = start_instant(when)
    assert instant is not None
    assert instant - time.monotonic() == pytest.approx(2.0, abs=0.2)
    # Less left than the drivers need to be told: refused, not started late.
    with pytest.raises(StartMissed, match="too late"):
        start_instant(time.time() + 0.1, ready_s=1.0)
    with pytest.raises(StartMissed, match="too late"):
        start_instant(time.time() - 3.0)


@pytest.mark.parametrize(
    "module",
    [
        "benchmarks.chat_load",
        "benchmarks.sfu_load",
        "benchmarks.media_load",
        "benchmarks.signaling_load",
    ],
)
def test_every_generator_refuses_a_past_start_at(module: str) -> None:
    past = str(time.time() - 60)
    for args, message in [
        (["--url", "http://127.0.0.1:9", "--api-key", "k", "--api-secret", "s"], "in the past"),
        ([], "goes with --url"),
    ]:
        future = str(time.time() + 600)
        run = subprocess.run(
            [sys.executable, "-m", module, *args, "--start-at", past if args else future],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert run.returncode == 2, (module, args, run.stderr)
        assert message in run.stderr, (module, args, run.stderr)

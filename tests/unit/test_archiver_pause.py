"""The archiver's pause before a pass counts from the first write not yet archived, not from
the end of the last pass (chat.history.archiver.ARCHIVE_DELAY_S): under steady writes a pass
longer than the pause is followed by the next at once."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from chat.history import archiver as archiver_module
from chat.history.archiver import Archiver
from chat.history.postgres import PostgresHistory
from chat.history.sqlite import SQLiteHistory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    # The module's own name for the time module, not the time module itself.
    monkeypatch.setattr(archiver_module, "time", SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(archiver_module, "ARCHIVE_DELAY_S", 0.5)
    return clock


def archiver(pause_s: float | None = None) -> Archiver:
    # The pause needs neither Redis nor a store: only what the store says of its pause.
    none: Any = None
    store: Any = SimpleNamespace(archive_pause_s=pause_s)
    return Archiver(none, store)


def test_the_pause_counts_from_the_first_note(clock: Clock) -> None:
    arch = archiver()
    assert arch.pause_left() == 0.0  # nothing noted
    arch.note("a")
    clock.now += 0.2
    arch.note("b")  # a later note does not push the pass back
    assert arch.pause_left() == pytest.approx(0.3)
    clock.now += 0.3
    assert arch.pause_left() == 0.0
    assert arch.take_due() == ["a", "b"]
    assert arch.take_due() == []


def test_a_note_during_a_long_pass_is_due_once_the_pass_ends(clock: Clock) -> None:
    arch = archiver()
    arch.note("a")
    clock.now += 0.5
    assert arch.take_due() == ["a"]
    # The pass takes 0.8 s; a write comes 0.1 s into it.
    clock.now += 0.1
    arch.note("c")
    clock.now += 0.7
    assert arch.pause_left() == 0.0, "the next pass waits for nothing"
    assert arch.take_due() == ["c"]
    # A write after the pass: a whole pause from it.
    clock.now += 0.1
    arch.note("d")
    assert arch.pause_left() == pytest.approx(0.5)


def test_a_store_may_say_its_own_pause(clock: Clock) -> None:
    arch = archiver(pause_s=0.3)
    arch.note("a")
    assert arch.pause_left() == pytest.approx(0.3)
    clock.now += 0.3
    assert arch.pause_left() == 0.0
    assert arch.take_due() == ["a"]


def test_postgres_pauses_less_than_sqlite() -> None:
    """SQLite's pause is the archiver's (ARCHIVE_DELAY_S); PostgreSQL's pass costs the node
    less per event, so it takes them more often (benchmarks/README.md, archive lag)."""
    assert SQLiteHistory.archive_pause_s is None
    assert Archiver(cast(Any, None), cast(Any, SQLiteHistory)).pause_s == 0.5
    pg = PostgresHistory.archive_pause_s
    assert pg is not None and 0 < pg < archiver_module.ARCHIVE_DELAY_S

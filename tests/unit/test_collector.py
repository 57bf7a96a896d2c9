"""Server processes settle their garbage collector once start-up is done."""

from __future__ import annotations

import gc

from huddle import collector


def test_settle_freezes_start_up_and_sets_thresholds() -> None:
    before = gc.get_threshold()
    survivor = [object() for _ in range(10)]  # lives past start-up
    try:
        collector.settle()
        assert gc.get_threshold() == collector.GC_THRESHOLDS
        assert gc.get_freeze_count() >= len(survivor)
        # Frozen: no generation holds it any more, so no collection scans it.
        assert all(o is not survivor for o in gc.get_objects())
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

"""Garbage-collector settings for long-lived server processes (the node and SFU workers)."""

from __future__ import annotations

import gc
from typing import Final

# Generation thresholds (Python's default: 700, 10, 10). Young objects die young in these
# processes (events, frames, RTP packets): a larger first generation lets them go by
# reference counting before a collection would promote them, so that full collections,
# whose time grows with every live connection, stay rare.
GC_THRESHOLDS: Final = (20_000, 20, 20)


def settle() -> None:
    """Call once start-up is done: what it allocated lives as long as the process, so it is
    kept out of the collector's scans (short full collections), and the thresholds set."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

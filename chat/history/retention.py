"""Retention: each conversation's history older than the configured days is deleted, by a
task of every node (deleting what another node deleted already deletes nothing)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Final

from chat.history.store import HistoryStore

log = logging.getLogger("huddle.chat")
# How often a node looks for history past the retention time.
RETENTION_INTERVAL_S: Final = 3600.0
DAY_MS: Final = 86_400_000


async def expire_old(store: HistoryStore, days: float, now_ms: int | None = None) -> int:
    """Delete every conversation's messages older than ``days``; replies how many."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    cutoff = now - int(days * DAY_MS)
    deleted = 0
    for conv in await store.conversations():
        deleted += await store.expire(conv, cutoff)
    return deleted


async def retention_loop(store: HistoryStore, days: float, interval_s: float | None = None) -> None:
    """Run :func:`expire_old` now and then every ``interval_s`` until cancelled."""
    while True:
        try:
            deleted = await expire_old(store, days)
            if deleted:
                log.info("old chat history deleted", extra={"messages": deleted, "days": days})
        except Exception as exc:
            # The database's own errors differ by driver; the next round tries again.
            log.warning("chat history retention failed", extra={"error": str(exc)})
        await asyncio.sleep(RETENTION_INTERVAL_S if interval_s is None else interval_s)

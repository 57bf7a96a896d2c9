"""Reads across the hot window: Redis holds each conversation's messages after ``cold_seq``
(chat/lua/trim.lua), the history store every message the window let go. A read names seqs,
and each is read where it lives, so that a page, a jump or a thread crossing the boundary
answers as it did before the window moved: the same messages, order and numbers.

A trim may run between reading ``cold_seq`` and reading Redis: a message found in neither
place it was looked for is then read from the store, which had it before Redis let it go.
"""

from __future__ import annotations

from collections.abc import Sequence

from chat import wire as w
from chat.history.store import HistoryStore
from chat.store import ChatStore


async def messages(
    store: ChatStore,
    history: HistoryStore | None,
    conv: str,
    cold: int,
    seqs: Sequence[int],
) -> list[w.ChatMessage]:
    """The messages ``seqs`` that exist, in ``seq`` order, as chat.store.ChatStore.messages
    gives them."""
    if history is None:
        return await store.messages(conv, seqs)
    below = [s for s in seqs if s <= cold]
    hot = [s for s in seqs if s > cold]
    out = await history.messages(conv, below) if below else []
    found = await store.messages(conv, hot)
    if len(found) < len(hot):
        have = {m.seq for m in found}
        found += await history.messages(conv, [s for s in hot if s not in have])
    out += found
    out.sort(key=lambda m: m.seq)
    return out


async def thread(
    store: ChatStore,
    history: HistoryStore | None,
    conv: str,
    cold: int,
    root: int,
    after: int,
    limit: int,
) -> list[w.ChatMessage]:
    """Replies to ``root`` numbered above ``after``, oldest first, at most ``limit``."""
    out: list[w.ChatMessage] = []
    if history is not None and after < cold:
        out = [m for m in await history.thread(conv, root, after, limit) if m.seq <= cold]
    if len(out) < limit:
        seqs = await store.thread(conv, root, max(after, cold), limit - len(out))
        out += await messages(store, history, conv, cold, seqs)
    return out


async def edits(
    store: ChatStore, history: HistoryStore | None, conv: str, cold: int, seq: int
) -> list[w.ChatMessage]:
    """Earlier versions of message ``seq``, oldest first."""
    if history is not None and seq <= cold:
        return await history.edits(conv, seq)
    return await store.edits(conv, seq)


async def warm(
    store: ChatStore, history: HistoryStore | None, conv: str, cold: int, seq: int
) -> bool:
    """Copy message ``seq`` back into Redis from the store when it is below the window, for
    a write to it (chat/lua/warm.lua); False when there was nothing to copy."""
    if history is None or seq > cold:
        return False
    found = await history.messages(conv, [seq])
    return bool(found) and await store.warm(conv, found[0])

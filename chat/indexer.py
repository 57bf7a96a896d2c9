"""The search index, written behind each conversation's log instead of by the send.

A conversation's meta holds ``ix_seq``: every message up to it has its terms in the index
(chat.search). The send script leaves the index alone, so a message costs its sender no
indexing; a node that stored messages indexes their conversation a moment later
(:class:`Indexer`, batching every message of the pause), and a search first brings each
conversation it reads up to its last message (:func:`catch_up`). Nothing can be left out:
the cursor is moved only by the script that adds the terms, in the same step, and whatever
a crash left behind is picked up by the next pass or search.

Edits and recalls keep the index right themselves for messages at or below ``ix_seq``; for
one above it they bump ``ix_rev`` instead, and a pass that read the messages before that
starts over (chat/lua/index.lua), so terms of an earlier text are never added.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

from redis.exceptions import RedisError

from chat.hits import message_terms
from chat.store import MESSAGE_DECODER, ChatStore, IndexHead, IndexSpan

log = logging.getLogger("huddle.chat")
# How long a node waits after a send before indexing: the messages of the pause go in one
# pass per conversation.
INDEX_DELAY_S: Final = 0.2
# Messages read and indexed per script call.
INDEX_BATCH: Final = 200
# Passes started over (messages edited meanwhile) before a conversation is left for later.
RETRIES: Final = 5


async def catch_up(store: ChatStore, convs: Sequence[str]) -> None:
    """Index every message of ``convs`` not in the index yet: a few round trips for all of
    them, one more for every INDEX_BATCH messages a conversation is behind."""
    heads = await store.index_heads(convs)
    behind = [(c, h) for c, h in zip(convs, heads, strict=True) if h and h.ix_seq < h.last_seq]
    retries = 0
    while behind and retries <= RETRIES:
        spans = [IndexSpan(c, h, min(h.last_seq, h.ix_seq + INDEX_BATCH)) for c, h in behind]
        messages = await store.raw_messages(spans)
        found = [_terms(span, raw) for span, raw in zip(spans, messages, strict=True)]
        done = await store.index(spans, found)
        behind = [
            (span.conv, IndexHead(span.upto, span.head.rev, span.head.last_seq))
            for span, ok in zip(spans, done, strict=True)
            if ok and span.upto < span.head.last_seq
        ]
        changed = [span.conv for span, ok in zip(spans, done, strict=True) if not ok]
        if changed:
            # Edited meanwhile: read their heads and messages again.
            retries += 1
            heads = await store.index_heads(changed)
            behind += [
                (c, h) for c, h in zip(changed, heads, strict=True) if h and h.ix_seq < h.last_seq
            ]


def _terms(span: IndexSpan, raw: list[bytes | None]) -> dict[str, list[int]]:
    terms: dict[str, list[int]] = {}
    for seq, blob in enumerate(raw, start=span.head.ix_seq + 1):
        if blob is not None:
            for term in message_terms(MESSAGE_DECODER.decode(blob)):
                terms.setdefault(term, []).append(seq)
    return terms


class Indexer:
    """Indexes the conversations this node stored messages in, shortly after."""

    def __init__(self, store: ChatStore, spawn: Callable[[Any], None]) -> None:
        self.store = store
        self.spawn = spawn
        self._due: set[str] = set()
        self._running = False

    def note(self, conv: str) -> None:
        self._due.add(conv)
        if not self._running:
            self._running = True
            self.spawn(self._run())

    async def _run(self) -> None:
        try:
            while self._due:
                await asyncio.sleep(INDEX_DELAY_S)
                convs, self._due = sorted(self._due), set()
                try:
                    await catch_up(self.store, convs)
                except (RedisError, OSError) as exc:
                    # Left for the next pass or search: the cursor did not move.
                    log.warning("search indexing failed", extra={"error": str(exc)})
        finally:
            self._running = False

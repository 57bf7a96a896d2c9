"""Full-text search over the messages of the conversations a user belongs to, answered by
the history store (chat.history: an FTS5 table in SQLite, a GIN-indexed terms column in
PostgreSQL) by the rules every backend shares (chat.hits): members' conversations only,
filters, newest first, highlights, two-character terms for Chinese, Japanese and Korean,
edits and recalls as the log applied them. Redis keeps no search terms.

A query first archives what the store lacks of those conversations (the archiver's catch-up,
usually nothing: each node archives a moment after each write), so that a message
acknowledged before the query is found by it.
"""

from __future__ import annotations

from collections.abc import Sequence

from chat import wire as w
from chat.history.archiver import Archiver
from chat.history.store import HistoryStore
from chat.text import query_terms


async def search(
    history: HistoryStore, archiver: Archiver | None, convs: Sequence[str], req: w.ChatSearch
) -> list[w.SearchHit]:
    if not query_terms(req.query) or not convs:
        return []
    if archiver is not None:
        await archiver.catch_up(convs)
    return await history.search(convs, req)

"""Connections' writes put off until the event loop's current round of callbacks is over, all
done by one callback.

A chat message to a group is queued for every member's connection in one pass; each
connection then writes once. One scheduled callback for them all instead of one each: a
handle the loop allocates, copies the context for and runs is a cost paid per delivery.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

log = logging.getLogger("huddle.session")


class Flushable(Protocol):
    def flush(self) -> None: ...


class FlushRound:
    """Calls ``flush()`` of each connection added during this round once the round is over,
    in the order they were added. A connection is added at most once a round: the caller
    remembers that it is due (``Session._flush_soon``)."""

    def __init__(self) -> None:
        self._due: list[Flushable] = []

    def add(self, connection: Flushable) -> None:
        due = self._due
        due.append(connection)
        if len(due) == 1:
            asyncio.get_running_loop().call_soon(self._run)

    def _run(self) -> None:
        # Added while these flush (none are, so far): due in the next round, scheduled anew.
        due, self._due = self._due, []
        for connection in due:
            try:
                connection.flush()
            except Exception:
                # One connection's failure must not keep the others' frames back.
                log.exception("flush failed")

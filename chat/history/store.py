"""The history store's interface, and what it is fed: a conversation's logged events.

A store is a copy of each conversation's event log (chat/lua/log.lua), applied in order:
``chat.message`` adds a message (system messages carry membership changes), ``chat.edited``
and ``chat.recalled`` rewrite one, ``chat.reaction`` sets one emoji's users, ``chat.receipt``
moves a read position. Each conversation's :class:`Head` says up to which event number the
store has it; :meth:`HistoryStore.append` applies events after the head only, in one
transaction with the head, so an archiver that retries a batch (or resumes after a crash
from ``head``) applies every event exactly once.

Reads answer in the shapes and numbering of the Redis reads they stand in for
(chat.store.ChatStore.messages, .thread, .edits, chat.search): messages with their thread
summaries and reactions, numbered by ``seq``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from chat import wire as w

LogEvent = w.ChatMessageEvent | w.ChatEdited | w.ChatRecalled | w.ChatReaction | w.ChatReadEvent


class HistoryError(Exception):
    """The store cannot do what was asked (its message says why)."""


class HistoryGap(HistoryError):
    """Events were given that do not follow the stored head: applying them would leave a
    hole, so none of the batch is applied."""


class EpochChanged(HistoryError):
    """The events belong to another life of the conversation's log (another epoch, see
    chat.resume) than the one stored: its numbers mean other events."""


class StoreBusy(HistoryError):
    """Another writer held what this write needed for longer than the store waits (a node
    stopped in the middle of a transaction): nothing was applied, and a later try may do."""


class SchemaTooNew(HistoryError):
    """The database was written by a newer version of this code."""


class Head(NamedTuple):
    """How far a conversation is stored: its last event number (``ev``) in log epoch
    ``epoch`` ('' while the log had none), and the last message number (``last_seq``)."""

    ev: int
    epoch: str
    last_seq: int


class HistoryStore(Protocol):
    @property
    def archive_pause_s(self) -> float | None:
        """How long the archiver waits after a write before a pass into this store
        (chat.history.archiver.ARCHIVE_DELAY_S when None): a store whose passes cost less
        per event can take them more often for the same CPU."""
        ...

    def thread_cpu_seconds(self) -> float | None:
        """CPU seconds of the store's own threads (SQLite's: its writes, the archive's
        among them, and its reads), or None for a store that runs none (PostgreSQL: the
        work is its server's)."""
        ...

    async def head(self, conv: str) -> Head | None:
        """Where the conversation's copy stands; None when nothing of it is stored."""
        ...

    async def heads(self, convs: Sequence[str]) -> dict[str, Head]:
        """The heads of those of ``convs`` something is stored of."""
        ...

    async def append(self, conv: str, events: Sequence[LogEvent]) -> Head:
        """Apply the conversation's logged events, numbered in order, in one transaction.

        Events at or below the head are skipped (already applied); the first one above it
        must be ``head.ev + 1`` and each next one the number after (else :class:`HistoryGap`
        and nothing is applied); an epoch other than the stored one raises
        :class:`EpochChanged`. Replies the new head."""
        ...

    async def append_many(self, batches: Sequence[tuple[str, Sequence[LogEvent]]]) -> list[Head]:
        """:meth:`append` for several conversations in one transaction (the events of one
        archiving pass); replies their heads in order. Any error applies none of them."""
        ...

    async def seed(
        self,
        conv: str,
        head: Head,
        messages: Sequence[w.ChatMessage],
        edits: dict[int, list[w.ChatMessage]],
        reads: dict[str, int],
    ) -> Head:
        """Store the conversation whole as it stood at event ``head.ev`` (messages with
        their reactions, earlier versions of edited ones, read positions), replacing what
        the store had of it: for a log that lost the events after the store's head. Left
        as it is when the store is already there. Replies the head now."""
        ...

    async def page(
        self,
        conv: str,
        *,
        before: int | None = None,
        after: int | None = None,
        around: int | None = None,
        limit: int = 50,
    ) -> list[w.ChatMessage]:
        """A page of messages in ``seq`` order, chosen as ``chat.history`` chooses it (see
        chat.history.events.page_range): the newest, or before/after/around a seq."""
        ...

    async def last_before(self, conv: str, before_ts: int) -> int:
        """The last seq of the conversation's messages sent before ``before_ts`` (ms); 0
        when none was."""
        ...

    async def messages(self, conv: str, seqs: Sequence[int]) -> list[w.ChatMessage]:
        """The messages ``seqs`` that are stored, in ``seq`` order."""
        ...

    async def thread(self, conv: str, root: int, after: int, limit: int) -> list[w.ChatMessage]:
        """Replies to thread ``root`` numbered above ``after``, oldest first."""
        ...

    async def edits(self, conv: str, seq: int) -> list[w.ChatMessage]:
        """Earlier versions of an edited message, oldest first (none once recalled)."""
        ...

    async def reads(self, conv: str) -> dict[str, int]:
        """Each member's read position as the log moved it: by receipts, and by the
        member's own sends. A broadcast channel's receipts are in the readers' feeds, not
        in the log, so a channel's follower reads only as far as they sent."""
        ...

    async def search(self, convs: Sequence[str], req: w.ChatSearch) -> list[w.SearchHit]:
        """Messages of ``convs`` (the caller passes only the user's conversations) matching
        ``req`` by the rules of chat.hits, newest first, at most ``req.limit``."""
        ...

    async def expire(self, conv: str, before_ts: int) -> int:
        """Delete the conversation's messages sent before ``before_ts`` (ms), with their
        earlier versions and search entries; replies how many were deleted."""
        ...

    async def conversations(self) -> list[str]:
        """Every conversation something is stored of."""
        ...

    async def delete(self, conv: str) -> None:
        """Forget the conversation altogether (its head too)."""
        ...

    async def close(self) -> None: ...

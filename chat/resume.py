"""Where a device resumes an event log (a conversation's, or a user's feed). Pure: no I/O.

A log numbers its events from 1 with no holes, and carries an *epoch*: an id made when the
log is created (the first event after its counter went missing) and changed when a node sees
the log go back in time. The same number in two epochs may be two different events: after
Redis came back from an older snapshot or append-only file, or after the log's keys were
lost, numbers are handed out again. A device's cursor is (number, epoch), and it is resumed
by replay only when every event after it is known to be the one the device would have got:

- no cursor: nothing to replay, the device starts at the head;
- a cursor at 0 is the start of any epoch: replayed like any other position;
- a cursor of another epoch: a gap (``epoch_changed``);
- a cursor ahead of the head: a gap (``ahead_of_head``), even without an epoch (an old client),
  since the events the device has were never written or were lost;
- more than ``max_replay`` events behind: a gap (``too_far_behind``);
- otherwise replay from the cursor; if the log no longer holds the next event, a gap
  (``trimmed``, see :func:`check_page`);
- and whenever the device tells the *stamp* of the event at its cursor (a value unique to
  each event ever logged), the event the log holds under that number must carry it, else a
  gap (``rewritten``, see :func:`check_cursor`). This is what catches a log gone back in
  time and written past the cursor again while no node followed it: the epoch is still the
  same (no node saw the log go back), yet the numbers hold other events.

A gap puts the device at the head of the current epoch: it reloads the log by page instead.

A node following a log checks that it still is the log it knew (:func:`check_follow`) after
pub/sub reconnects, since whatever was published while Redis was away, or before a restore,
never arrived.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

GapReason = Literal["epoch_changed", "ahead_of_head", "too_far_behind", "trimmed", "rewritten"]


@dataclass(frozen=True)
class Position:
    """A device's cursor: the last event number it has, that event's epoch and its stamp.

    ``epoch`` is None (or empty) for a device that does not know it: a client older than
    epochs, or a cursor taken when the log had none yet. ``stamp`` likewise: a client older
    than stamps, or a position the device was given without the event (a sync's head)."""

    ev: int
    epoch: str | None = None
    stamp: str | None = None


@dataclass(frozen=True)
class LogState:
    """A log as Redis has it now: the last number handed out and the current epoch ('' when
    the log has none yet: no event since it was created, or written before epochs)."""

    head: int
    epoch: str


@dataclass(frozen=True)
class Resume:
    """Replay the events after ``after`` up to the head; on a gap, ``after`` is the head."""

    after: int
    gap: GapReason | None = None


def resume(cursor: Position | None, log: LogState, max_replay: int) -> Resume:
    """Where a device with ``cursor`` starts in ``log`` (see the module's rules)."""
    if cursor is None:
        return Resume(log.head)
    if cursor.ev > 0 and cursor.epoch and cursor.epoch != log.epoch:
        return Resume(log.head, "epoch_changed")
    if cursor.ev > log.head:
        return Resume(log.head, "ahead_of_head")
    if log.head - cursor.ev > max_replay:
        return Resume(log.head, "too_far_behind")
    return Resume(cursor.ev)


def check_page(after: int, first: int | None) -> GapReason | None:
    """A replay page read after ``after`` began with event ``first`` (None: it was empty),
    while the head is beyond ``after``: anything but the next event means it is gone."""
    return None if first == after + 1 else "trimmed"


def check_cursor(cursor: Position, first: int | None, stamp: str | None) -> GapReason | None:
    """The log read from the cursor's own number on begins with event ``first`` (None: it
    holds nothing there any more) stamped ``stamp``: is it still the event the device has?

    Only a stamp on both sides that differs is a gap; anything else is left to the other
    rules: a cursor without a stamp (an older client), an event logged before stamps, or an
    event no longer kept (the replay then finds out whether what follows it still is)."""
    if not cursor.stamp or cursor.ev <= 0 or first != cursor.ev or not stamp:
        return None
    return None if stamp == cursor.stamp else "rewritten"


FollowVerdict = Literal["same", "adopt", "reset", "rolled_back"]


def check_follow(
    known: Position, log: LogState, last_event_same: bool | None = None
) -> FollowVerdict:
    """Is the log a node follows (``known``: the last event it passed on) still that log?

    ``last_event_same``: whether the event now stored under ``known.ev`` is the one the
    node passed on (None: not checked). Verdicts:
    - ``same``: go on; events after ``known.ev`` are read back as usual;
    - ``adopt``: the log got its first epoch (it had none): take it, nothing was lost;
    - ``reset``: another epoch: the log was made anew, every reader has a gap;
    - ``rolled_back``: the same epoch went back in time (its head fell below what was
      passed on, or the event under that number changed): the epoch must be replaced, so
      that devices holding numbers of the lost events get a gap wherever they resume.
    """
    if known.epoch and log.epoch != known.epoch:
        return "reset"
    if log.head < known.ev or last_event_same is False:
        return "rolled_back"
    if not known.epoch and log.epoch:
        return "adopt"
    return "same"

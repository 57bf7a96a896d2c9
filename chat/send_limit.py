"""Messages one user may send per second, across nodes, without a Redis round trip per send.

A user's counter lives in the user's hash slot and a conversation's keys in the
conversation's, so the check cannot ride in the send script (under Redis Cluster one script
touches one slot). Each node therefore decides alone, from what it knows: the sends it let
through itself in the current second, plus the ones the other nodes let through as last
reported by Redis. Every :data:`RECONCILE_S` while a user sends, the node adds its new sends
to the user's counter for that second (one script call for every user on one Redis, one per
slot on a cluster, off the request path) and learns the total back.

On one Redis (no slots to keep apart) the send script itself adds the send to the user's
counter and replies the total (chat/lua/send.lua); every user's counter of a second is then a
field of one hash, whose life each node sets once a second, where a key for each user would
need its life set at each user's first send of the second (with users sending a few
messages a minute, nearly every send): a send marked with :meth:`sending` and
closed with :meth:`sent` is reported that way, in the send's own round trip, and only what
never reached the script (refused before it, or a call that failed) waits for the
reconcile.

Tolerance: a user on one node (the common case) is held exactly to the limit. A user sending
through k nodes at once gets at most the limit plus what the other k - 1 nodes let through
before their sends were reconciled (one RECONCILE_S and a round trip; on one Redis, before
this node's next send learns the total); never more than k x the limit in one second.

Pure: the clock (``second``) is passed in; chat.service does the Redis part.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# How long a node's sends wait to be added to the users' counters in Redis.
RECONCILE_S: Final = 0.05


@dataclass
class _User:
    second: int
    here: int = 0  # let through by this node in ``second``
    reported: int = 0  # of those, already added to the counter in Redis
    others: int = 0  # let through by other nodes in ``second``, as Redis last said
    sending: int = 0  # of ``here``, on their way to Redis in the send script


class SendLimiter:
    def __init__(self, per_second: int) -> None:
        self.per_second = per_second
        self._users: dict[str, _User] = {}
        # Sends of a second that ended before they were reported (user, second, sends).
        self._ended: list[tuple[str, int, int]] = []

    def allow(self, user: str, second: int) -> bool:
        """Count one send of ``user`` in ``second`` if the limit leaves room for it."""
        state = self._users.get(user)
        if state is None or state.second != second:
            if state is not None and state.here - state.sending > state.reported:
                left = state.here - state.sending - state.reported
                self._ended.append((user, state.second, left))
            state = self._users[user] = _User(second)
        if state.here + state.others >= self.per_second:
            return False
        state.here += 1
        return True

    def sending(self, user: str, second: int) -> None:
        """The send just allowed (``allow``) goes to Redis in the send script, which adds it
        to the user's counter: ``unreported`` leaves it out until :meth:`sent`."""
        state = self._users.get(user)
        if state is not None and state.second == second:
            state.sending += 1

    def sent(self, user: str, second: int, total: int | None) -> None:
        """The send marked by :meth:`sending` is done: ``total`` is the user's counter in
        Redis right after the script added it, None when the script did not (the send was
        refused before it, or the call failed), which leaves it to ``unreported``."""
        state = self._users.get(user)
        if state is None or state.second != second:
            # The second ended meanwhile: only an unreported send still matters to Redis.
            if total is None:
                self._ended.append((user, second, 1))
            return
        state.sending -= 1
        if total is not None:
            state.reported += 1
            self.learn(user, second, total)

    def unreported(self) -> list[tuple[str, int, int]]:
        """(user, second, sends) this node let through that Redis does not know of yet (and
        no send script is adding); they count as reported from here on."""
        out, self._ended = self._ended, []
        for user, state in self._users.items():
            left = state.here - state.sending - state.reported
            if left > 0:
                out.append((user, state.second, left))
                state.reported += left
        return out

    def learn(self, user: str, second: int, total: int) -> None:
        """Redis's count of ``user``'s sends in ``second`` from every node, this one's
        included, right after this node's were added."""
        state = self._users.get(user)
        if state is not None and state.second == second:
            state.others = max(state.others, total - state.reported)

    def forget_before(self, second: int) -> None:
        """Drop what is known of seconds before ``second`` (their limit no longer matters)."""
        old = [u for u, s in self._users.items() if s.second < second and s.here <= s.reported]
        for user in old:
            del self._users[user]

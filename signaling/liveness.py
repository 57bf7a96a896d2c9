"""When to ask a silent pub/sub connection a PING, and when to give it up.

A subscribed connection cut off from its Redis without a word (its host gone, a network cut,
a redis-server stopped: no FIN, no RST) stays silent for ever, and a reader blocked on it
waits for messages that no longer come. ``signaling.pubsub_pipe`` watches its own connection
with timers of its own; redis-py's ``PubSub`` connections (one Redis over TLS, each shard of a
cluster) are watched with this: the reader counts what it reads (``reads``, the only work per
message), and something looks now and then (``look``) with the clock passed in.

The policy: a connection nothing was read from for ``idle_s`` is asked a PING; if still
nothing at all is read from it ``reply_s`` after, it is lost (the caller drops it, and the
usual reconnect follows). Anything read (a message, a confirmation, the PING's reply) proves
the connection alive and starts the count again. Looks are at most a look's interval apart, so
a silence is seen that much late at most.
"""

from __future__ import annotations

from enum import Enum


class Verdict(Enum):
    PING = "ping"
    LOST = "lost"


class Liveness:
    """One connection's reads and what was last seen of them."""

    __slots__ = ("_pinged_at", "_quiet_since", "_seen", "reads")

    def __init__(self, now: float) -> None:
        self.reads = 0
        self._seen = 0
        self._quiet_since = now
        self._pinged_at: float | None = None

    def look(self, now: float, idle_s: float, reply_s: float) -> Verdict | None:
        """What to do now: ask a PING, give the connection up, or nothing."""
        if self.reads != self._seen:
            self._seen = self.reads
            self._quiet_since = now
            self._pinged_at = None
            return None
        if self._pinged_at is not None:
            return Verdict.LOST if now - self._pinged_at >= reply_s else None
        if now - self._quiet_since >= idle_s:
            self._pinged_at = now
            return Verdict.PING
        return None

    def restart(self, now: float) -> None:
        """A connection made anew: watched from now, no PING waited for."""
        self._seen = self.reads
        self._quiet_since = now
        self._pinged_at = None

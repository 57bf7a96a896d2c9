"""signaling.liveness: when a silent pub/sub connection is asked a PING, and given up."""

from __future__ import annotations

from signaling.liveness import Liveness, Verdict

IDLE, REPLY = 5.0, 5.0


def test_a_silent_connection_is_pinged_after_idle_then_lost_after_reply() -> None:
    liveness = Liveness(now=0.0)
    assert liveness.look(4.9, IDLE, REPLY) is None
    assert liveness.look(5.0, IDLE, REPLY) is Verdict.PING
    # Asked once: no second PING while the reply is waited for.
    assert liveness.look(9.9, IDLE, REPLY) is None
    assert liveness.look(10.0, IDLE, REPLY) is Verdict.LOST


def test_anything_read_starts_the_count_again() -> None:
    liveness = Liveness(now=0.0)
    assert liveness.look(5.0, IDLE, REPLY) is Verdict.PING
    liveness.reads += 1  # the PING's reply
    assert liveness.look(6.0, IDLE, REPLY) is None
    # Quiet since that look: asked again IDLE after it, never given up meanwhile.
    assert liveness.look(10.9, IDLE, REPLY) is None
    assert liveness.look(11.0, IDLE, REPLY) is Verdict.PING
    liveness.reads += 3
    assert liveness.look(16.0, IDLE, REPLY) is None


def test_a_connection_made_anew_is_watched_from_then() -> None:
    liveness = Liveness(now=0.0)
    liveness.look(5.0, IDLE, REPLY)
    assert liveness.look(10.0, IDLE, REPLY) is Verdict.LOST
    liveness.restart(10.0)
    assert liveness.look(14.0, IDLE, REPLY) is None
    assert liveness.look(15.0, IDLE, REPLY) is Verdict.PING

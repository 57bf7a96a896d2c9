"""The per-user send limit each node keeps, reconciled through Redis (chat.send_limit)."""

from __future__ import annotations

from chat.send_limit import SendLimiter


def test_one_node_holds_a_user_to_the_limit_each_second() -> None:
    limiter = SendLimiter(3)
    assert [limiter.allow("alice", 100) for _ in range(5)] == [True, True, True, False, False]
    # Another user has a limit of their own.
    assert limiter.allow("bob", 100)
    # A new second starts afresh.
    assert [limiter.allow("alice", 101) for _ in range(4)] == [True, True, True, False]


def test_sends_are_reported_once() -> None:
    limiter = SendLimiter(10)
    for _ in range(3):
        limiter.allow("alice", 100)
    limiter.allow("bob", 100)
    assert sorted(limiter.unreported()) == [("alice", 100, 3), ("bob", 100, 1)]
    assert limiter.unreported() == []
    limiter.allow("alice", 100)
    assert limiter.unreported() == [("alice", 100, 1)]


def test_sends_of_a_second_that_ended_unreported_are_still_reported() -> None:
    limiter = SendLimiter(10)
    limiter.allow("alice", 100)
    limiter.allow("alice", 100)
    limiter.allow("alice", 101)
    assert sorted(limiter.unreported()) == [("alice", 100, 2), ("alice", 101, 1)]


def test_other_nodes_sends_count_once_learned() -> None:
    limiter = SendLimiter(5)
    limiter.allow("alice", 100)
    limiter.unreported()
    # Redis says 4 in all: 3 came through other nodes, so 1 is left here.
    limiter.learn("alice", 100, 4)
    assert [limiter.allow("alice", 100) for _ in range(2)] == [True, False]
    # What is learned of another second changes nothing now.
    limiter.learn("alice", 99, 50)
    assert not limiter.allow("alice", 100)
    assert limiter.allow("alice", 101)


def test_an_older_total_never_lowers_what_is_known() -> None:
    limiter = SendLimiter(5)
    limiter.allow("alice", 100)
    limiter.unreported()
    limiter.learn("alice", 100, 5)
    limiter.learn("alice", 100, 2)
    assert not limiter.allow("alice", 100)


def test_forget_keeps_what_is_unreported() -> None:
    limiter = SendLimiter(5)
    limiter.allow("alice", 100)
    limiter.allow("bob", 100)
    assert [u for u, _, _ in limiter.unreported()] == ["alice", "bob"]
    limiter.allow("bob", 100)
    limiter.forget_before(101)
    # Alice's second is gone; Bob's unreported send is still reported.
    assert limiter.unreported() == [("bob", 100, 1)]
    assert limiter.allow("alice", 100)


def test_a_send_the_script_counts_is_reported_by_it_alone() -> None:
    limiter = SendLimiter(5)
    assert limiter.allow("alice", 100)
    limiter.sending("alice", 100)
    # On its way in the send script: not reported aside as well.
    assert limiter.unreported() == []
    # The script added it: Redis says 4 in all, so 3 came through other nodes.
    limiter.sent("alice", 100, 4)
    assert limiter.unreported() == []
    assert [limiter.allow("alice", 100) for _ in range(2)] == [True, False]


def test_a_send_the_script_did_not_count_is_reported_aside() -> None:
    limiter = SendLimiter(5)
    limiter.allow("alice", 100)
    limiter.sending("alice", 100)
    limiter.allow("alice", 100)  # another, refused before the script
    assert limiter.unreported() == [("alice", 100, 1)]
    limiter.sent("alice", 100, None)
    assert limiter.unreported() == [("alice", 100, 1)]
    assert limiter.unreported() == []


def test_a_counted_send_still_on_its_way_when_its_second_ends() -> None:
    limiter = SendLimiter(5)
    limiter.allow("alice", 100)
    limiter.sending("alice", 100)
    limiter.allow("bob", 100)
    limiter.sending("bob", 100)
    limiter.allow("alice", 101)
    limiter.allow("bob", 101)
    # Alice's was added by the script; Bob's call failed, so it is still to report.
    limiter.sent("alice", 100, 1)
    limiter.sent("bob", 100, None)
    assert sorted(limiter.unreported()) == [("alice", 101, 1), ("bob", 100, 1), ("bob", 101, 1)]


def test_forget_keeps_a_send_on_its_way() -> None:
    limiter = SendLimiter(5)
    limiter.allow("alice", 100)
    limiter.sending("alice", 100)
    limiter.forget_before(101)
    limiter.sent("alice", 100, None)
    assert limiter.unreported() == [("alice", 100, 1)]

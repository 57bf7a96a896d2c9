from __future__ import annotations

from chat.resume import (
    LogState,
    Position,
    Resume,
    check_cursor,
    check_follow,
    check_page,
    resume,
)

MAX = 100
LOG = LogState(head=50, epoch="e2")


def test_no_cursor_starts_at_the_head_without_a_gap() -> None:
    assert resume(None, LOG, MAX) == Resume(50)
    assert resume(None, LogState(0, ""), MAX) == Resume(0)


def test_a_cursor_of_the_same_epoch_replays_what_follows_it() -> None:
    assert resume(Position(42, "e2"), LOG, MAX) == Resume(42)
    assert resume(Position(50, "e2"), LOG, MAX) == Resume(50)  # up to date: nothing to send


def test_a_cursor_of_another_epoch_is_a_gap_wherever_it_points() -> None:
    # Numbers were handed out again: event 42 of e1 is not event 42 of e2.
    assert resume(Position(42, "e1"), LOG, MAX) == Resume(50, "epoch_changed")
    assert resume(Position(50, "e1"), LOG, MAX) == Resume(50, "epoch_changed")
    assert resume(Position(7, "e1"), LOG, MAX) == Resume(50, "epoch_changed")


def test_position_zero_is_the_start_of_every_epoch() -> None:
    assert resume(Position(0, "e1"), LOG, MAX) == Resume(0)
    assert resume(Position(0, None), LOG, MAX) == Resume(0)


def test_a_cursor_ahead_of_the_head_is_a_gap_not_a_wait() -> None:
    # Redis came back from an older snapshot of the same log: same epoch, head behind.
    assert resume(Position(51, "e2"), LOG, MAX) == Resume(50, "ahead_of_head")
    # An old client sends no epoch: it still gets the gap rather than skipping what comes.
    assert resume(Position(80, None), LOG, MAX) == Resume(50, "ahead_of_head")
    assert resume(Position(3, None), LogState(0, ""), MAX) == Resume(0, "ahead_of_head")


def test_without_an_epoch_on_either_side_only_the_position_counts() -> None:
    assert resume(Position(42, None), LOG, MAX) == Resume(42)
    assert resume(Position(42, ""), LOG, MAX) == Resume(42)
    # A log written before epochs existed has none yet: a cursor that has one is a gap,
    # because the log it came from cannot be told apart from this one.
    assert resume(Position(42, "e2"), LogState(50, ""), MAX) == Resume(50, "epoch_changed")


def test_too_far_behind_is_a_gap() -> None:
    assert resume(Position(0, "e2"), LogState(MAX, "e2"), MAX) == Resume(0)
    assert resume(Position(0, "e2"), LogState(MAX + 1, "e2"), MAX) == Resume(
        MAX + 1, "too_far_behind"
    )


def test_a_replay_page_must_start_right_after_the_cursor() -> None:
    assert check_page(42, 43) is None
    assert check_page(42, 45) == "trimmed"  # 43 and 44 are no longer kept
    assert check_page(42, None) == "trimmed"  # the head is beyond, yet nothing is stored


def test_a_followed_log_that_is_unchanged_goes_on() -> None:
    assert check_follow(Position(50, "e2"), LOG) == "same"
    assert check_follow(Position(40, "e2"), LOG, last_event_same=True) == "same"
    assert check_follow(Position(0, ""), LogState(0, "")) == "same"


def test_a_followed_log_that_went_back_in_time_is_rolled_back() -> None:
    assert check_follow(Position(60, "e2"), LOG) == "rolled_back"
    # Written past the node's position again before the node looked: the event under the
    # node's last number is another one.
    assert check_follow(Position(40, "e2"), LOG, last_event_same=False) == "rolled_back"
    assert check_follow(Position(60, ""), LogState(50, "")) == "rolled_back"


def test_a_followed_log_made_anew_is_reset() -> None:
    assert check_follow(Position(40, "e1"), LOG) == "reset"
    assert check_follow(Position(60, "e1"), LOG) == "reset"
    assert check_follow(Position(40, "e1"), LogState(0, "")) == "reset"  # keys lost, no write yet


def test_a_log_getting_its_first_epoch_is_adopted() -> None:
    assert check_follow(Position(40, ""), LOG) == "adopt"
    assert check_follow(Position(40, None), LOG, last_event_same=True) == "adopt"


def test_the_event_at_a_stamped_cursor_must_still_be_the_one_the_device_has() -> None:
    assert check_cursor(Position(42, "e2", "s42"), 42, "s42") is None
    # Redis went back in time and was written past the cursor again while no node followed
    # the log: same epoch, same number, another event.
    assert check_cursor(Position(42, "e2", "s42"), 42, "t42") == "rewritten"


def test_a_cursor_without_a_stamp_keeps_the_position_rules() -> None:
    assert check_cursor(Position(42, "e2"), 42, "t42") is None
    assert check_cursor(Position(42, "e2", ""), 42, "t42") is None
    assert check_cursor(Position(0, "e2", "s0"), None, None) is None  # the start: no event


def test_what_cannot_be_compared_is_left_to_the_other_rules() -> None:
    # The cursor's event is no longer kept (trimmed): check_page judges what follows.
    assert check_cursor(Position(42, "e2", "s42"), 43, "t43") is None
    assert check_cursor(Position(42, "e2", "s42"), None, None) is None
    # An event logged before stamps existed carries none.
    assert check_cursor(Position(42, "e2", "s42"), 42, None) is None

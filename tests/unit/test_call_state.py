"""calls.state: which request each state allows, and who is told what."""

from __future__ import annotations

import itertools

import msgspec
import pytest

from calls.ring_script import render_rules
from calls.state import (
    ACTIVE,
    RULES,
    Action,
    CallState,
    MemberState,
    Transition,
    call_goes_on,
    events_for,
    refusal,
)
from signaling import protocol as p

R, A, X = CallState.RINGING, CallState.ACCEPTED, CallState.ENDED
RING, JOIN = MemberState.RINGING, MemberState.JOINED

# (action, call state, own member state, is caller) -> allowed; everything else is refused.
ALLOWED = {
    # Whoever rings may answer (a caller never rings: the role plays no part).
    *(
        (a, c, RING, caller)
        for a in (Action.ACCEPT, Action.DECLINE)
        for c in (R, A)
        for caller in (True, False)
    ),
    (Action.CANCEL, R, JOIN, True),
    (Action.HANGUP, A, JOIN, True),
    (Action.HANGUP, A, JOIN, False),
    (Action.UPDATE, A, JOIN, True),
    (Action.UPDATE, A, JOIN, False),
    (Action.INVITE, A, JOIN, True),
    (Action.INVITE, A, JOIN, False),
}


@pytest.mark.parametrize(
    ("action", "call", "member", "caller"),
    list(itertools.product(Action, CallState, MemberState, (True, False))),
)
def test_the_table_allows_exactly_the_expected_requests(
    action: Action, call: CallState, member: MemberState, caller: bool
) -> None:
    code = refusal(action, call, member, caller)
    if (action, call, member, caller) in ALLOWED:
        assert code is None
    else:
        assert code in p.ERROR_CODES and code != p.ErrorCode.UNKNOWN_CALL


@pytest.mark.parametrize(
    ("action", "call", "member", "caller", "code"),
    [
        # A second accept, after another device or person won: not ringing any more.
        (Action.ACCEPT, A, JOIN, False, "call_not_ringing"),
        (Action.ACCEPT, X, RING, False, "call_not_ringing"),
        (Action.ACCEPT, R, JOIN, True, "call_not_ringing"),  # the caller's own call
        (Action.DECLINE, X, MemberState.CANCELLED, False, "call_not_ringing"),
        (Action.CANCEL, R, RING, False, "forbidden"),  # only the caller cancels
        (Action.CANCEL, A, JOIN, True, "call_not_ringing"),
        (Action.HANGUP, R, JOIN, True, "call_not_active"),  # while ringing: cancel instead
        (Action.HANGUP, A, MemberState.LEFT, False, "call_not_active"),
        (Action.UPDATE, X, JOIN, False, "call_not_active"),
        (Action.INVITE, R, JOIN, True, "call_not_active"),
        (Action.INVITE, A, RING, False, "call_not_active"),
    ],
)
def test_refusal_codes(
    action: Action, call: CallState, member: MemberState, caller: bool, code: str
) -> None:
    assert refusal(action, call, member, caller) == code


@pytest.mark.parametrize("action", list(Action))
def test_no_call_and_not_a_member_look_the_same(action: Action) -> None:
    assert refusal(action, None, None, False) == "unknown_call"
    assert refusal(action, A, None, False) == "unknown_call"
    assert refusal(action, None, JOIN, True) == "unknown_call"


def test_rules_cover_every_action_and_reach_the_lua_script() -> None:
    assert set(RULES) == set(Action)
    lua = render_rules()
    for action, rule in RULES.items():
        line = next(x for x in lua.splitlines() if x.strip().startswith(f"['{action}']"))
        for state in rule.call_states:
            assert f"['{state}'] = true" in line.split("members")[0]
        assert f"call_err = '{rule.wrong_call_state}'" in line
        assert ("caller_only = true" in line) is rule.caller_only


@pytest.mark.parametrize(
    ("joined", "ringing", "goes_on"),
    [(2, 0, True), (3, 1, True), (1, 1, True), (1, 0, False), (0, 2, False), (0, 0, False)],
)
def test_call_goes_on(joined: int, ringing: int, goes_on: bool) -> None:
    assert call_goes_on(joined, ringing) is goes_on


def test_active_member_states() -> None:
    assert {RING, JOIN} == ACTIVE


# --- events ----------------------------------------------------------------------------


def transition(**fields: object) -> Transition:
    base: dict[str, object] = {
        "to": "",
        "call": "c1",
        "actor": "alice",
        "session": "s-alice",
        "device": "phone",
        "inviter": "alice",
        "inviter_name": "Alice",
        "media": "video",
        "room": "call-c1",
    }
    base.update(fields)
    return msgspec.convert(base, Transition)


def tags(events: list[p.Event]) -> list[str]:
    return [e.__struct_config__.tag for e in events]  # type: ignore[misc]


def test_invite_rings_the_callee_and_tells_the_callers_other_devices() -> None:
    t = transition(
        kind="invite", subject="bob", state="ringing", members={"alice": "joined", "bob": "ringing"}
    )
    [incoming] = events_for(t, "bob")
    assert isinstance(incoming, p.CallIncoming)
    assert (incoming.from_, incoming.from_name, incoming.media) == ("alice", "Alice", "video")
    assert b'"from":"alice"' in p.encode(incoming)
    [outgoing] = events_for(t, "alice")
    assert isinstance(outgoing, p.CallOutgoing)
    assert (outgoing.to, outgoing.media) == ("bob", "video")


def test_invite_into_an_accepted_call_rings_only_the_invitee() -> None:
    members = {"alice": "joined", "bob": "joined", "carol": "ringing"}
    t = transition(kind="invite", subject="carol", state="accepted", members=members)
    assert tags(events_for(t, "carol")) == ["call.incoming"]
    assert events_for(t, "alice") == []
    assert events_for(t, "bob") == []


def test_accept() -> None:
    t = transition(
        kind="accept",
        actor="bob",
        device="laptop",
        subject="bob",
        state="accepted",
        members={"alice": "joined", "bob": "joined"},
    )
    [accepted] = events_for(t, "alice")
    assert isinstance(accepted, p.CallAccepted)
    assert (accepted.room, accepted.device, accepted.by) == ("call-c1", "laptop", "bob")
    assert tags(events_for(t, "bob")) == ["call.answered_elsewhere"]


def test_decline_of_a_one_to_one_call() -> None:
    t = transition(
        kind="decline",
        actor="bob",
        subject="bob",
        state="ended",
        reason="declined",
        members={"alice": "joined", "bob": "declined"},
    )
    [declined] = events_for(t, "alice")
    assert isinstance(declined, p.CallDeclined) and declined.by == "bob"
    [ended] = events_for(t, "bob")
    assert isinstance(ended, p.CallEnded) and ended.reason == "declined"


def test_decline_in_a_call_that_goes_on() -> None:
    members = {"alice": "joined", "bob": "joined", "carol": "declined"}
    t = transition(
        kind="decline", actor="carol", subject="carol", state="accepted", members=members
    )
    for user in ("alice", "bob"):
        [left] = events_for(t, user)
        assert isinstance(left, p.CallLeft)
        assert (left.user, left.reason) == ("carol", "declined")


def test_cancel() -> None:
    t = transition(
        kind="cancel",
        state="ended",
        reason="cancelled",
        members={"alice": "joined", "bob": "cancelled"},
    )
    assert tags(events_for(t, "bob")) == ["call.cancelled"]
    [ended] = events_for(t, "alice")
    assert isinstance(ended, p.CallEnded) and ended.reason == "cancelled"


def test_ring_timeout_of_a_one_to_one_call() -> None:
    t = transition(
        kind="timeout",
        actor="",
        session="",
        device="",
        subject="bob",
        state="ended",
        reason="no_answer",
        members={"alice": "joined", "bob": "missed"},
    )
    [ended] = events_for(t, "alice")
    assert isinstance(ended, p.CallEnded) and ended.reason == "no_answer"
    [missed] = events_for(t, "bob")
    assert isinstance(missed, p.CallMissed)
    assert (missed.from_, missed.media) == ("alice", "video")


def test_ring_timeout_in_a_call_that_goes_on() -> None:
    members = {"alice": "joined", "bob": "joined", "dave": "missed"}
    t = transition(kind="timeout", actor="", subject="dave", state="accepted", members=members)
    [left] = events_for(t, "bob")
    assert isinstance(left, p.CallLeft) and (left.user, left.reason) == ("dave", "no_answer")
    assert tags(events_for(t, "dave")) == ["call.missed"]


def test_hangup_ends_a_call_of_two_and_stops_invitations_still_ringing() -> None:
    members = {"alice": "joined", "bob": "left", "carol": "cancelled", "dave": "declined"}
    t = transition(
        kind="hangup",
        actor="bob",
        subject="bob",
        state="ended",
        reason="hangup",
        members=members,
    )
    [ended] = events_for(t, "alice")
    assert isinstance(ended, p.CallEnded) and ended.reason == "hangup"
    assert tags(events_for(t, "bob")) == ["call.ended"]  # bob's other devices
    assert tags(events_for(t, "carol")) == ["call.cancelled"]
    assert events_for(t, "dave") == []  # declined earlier: nothing more to say


def test_hangup_in_a_call_that_goes_on() -> None:
    members = {"alice": "joined", "bob": "left", "carol": "joined"}
    t = transition(kind="hangup", actor="bob", subject="bob", state="accepted", members=members)
    for user in ("alice", "carol"):
        [left] = events_for(t, user)
        assert isinstance(left, p.CallLeft) and (left.user, left.reason) == ("bob", "hangup")


def test_update_reaches_every_joined_member() -> None:
    members = {"alice": "joined", "bob": "joined", "carol": "ringing"}
    t = transition(kind="update", media="video", state="accepted", members=members)
    for user in ("alice", "bob"):
        [updated] = events_for(t, user)
        assert isinstance(updated, p.CallUpdated)
        assert (updated.media, updated.by) == ("video", "alice")
    assert events_for(t, "carol") == []


def test_every_event_kind_is_a_registered_server_event() -> None:
    produced: set[str] = set()
    cases = [
        ("invite", "ringing", {"alice": "joined", "bob": "ringing"}, "bob"),
        ("accept", "accepted", {"alice": "joined", "bob": "joined"}, "bob"),
        ("decline", "ended", {"alice": "joined", "bob": "declined"}, "bob"),
        ("decline", "accepted", {"alice": "joined", "x": "joined", "bob": "declined"}, "bob"),
        ("cancel", "ended", {"alice": "joined", "bob": "cancelled"}, ""),
        ("timeout", "ended", {"alice": "joined", "bob": "missed"}, "bob"),
        ("update", "accepted", {"alice": "joined", "bob": "joined"}, ""),
    ]
    for kind, state, members, subject in cases:
        t = transition(kind=kind, state=state, members=members, subject=subject)
        for user in members:
            produced.update(tags(events_for(t, user)))
    assert produced == {
        "call.incoming",
        "call.outgoing",
        "call.accepted",
        "call.answered_elsewhere",
        "call.declined",
        "call.cancelled",
        "call.missed",
        "call.ended",
        "call.updated",
        "call.left",
    }
    assert produced <= set(p.SERVER_EVENTS)

"""Ringing calls as a pure state machine: states, the request table, and who is told what.

A call (``call.invite`` ... ``call.hangup``) has a state, and so has each of its members:

    call:    ringing --accept--> accepted --last one leaves--> ended
             ringing --decline / cancel / no answer----------> ended
    member:  ringing --accept--> joined --hangup--> left
             ringing --decline--> declined | --ring timeout--> missed | --call ends--> cancelled

The caller is a member that starts ``joined``. A call goes on while two members are joined,
or one is joined and someone still rings for it (a third person invited into a call rings
while the other two talk; the last one left waits for the ones still ringing).

No I/O here: calls/ringing.py runs each transition as one Lua script in Redis, with
``RULES`` rendered into the script, and every node with devices of a member turns the
published ``Transition`` into events with ``events_for``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

import msgspec

from signaling import protocol as p

E = p.ErrorCode


class CallState(StrEnum):
    RINGING = "ringing"
    ACCEPTED = "accepted"
    ENDED = "ended"


class MemberState(StrEnum):
    RINGING = "ringing"
    JOINED = "joined"
    DECLINED = "declined"
    MISSED = "missed"
    CANCELLED = "cancelled"
    LEFT = "left"


ACTIVE: Final = frozenset({MemberState.RINGING, MemberState.JOINED})


class Action(StrEnum):
    """A request on an existing call (a new ``call.invite`` has no call to check yet)."""

    INVITE = "invite"  # call.invite with ``call``: one more person into an accepted call
    ACCEPT = "accept"
    DECLINE = "decline"
    CANCEL = "cancel"
    HANGUP = "hangup"
    UPDATE = "update"


@dataclass(frozen=True)
class Rule:
    """When a request is allowed, and the error code for each way it can be out of place."""

    call_states: frozenset[CallState]
    member_states: frozenset[MemberState]  # the requester's own state in the call
    caller_only: bool
    wrong_call_state: str
    wrong_member_state: str
    not_caller: str = E.FORBIDDEN


def _rule(
    calls: set[CallState], members: set[MemberState], code: str, *, caller_only: bool = False
) -> Rule:
    return Rule(frozenset(calls), frozenset(members), caller_only, code, code)


_RINGING, _ACCEPTED = CallState.RINGING, CallState.ACCEPTED
RULES: Final[Mapping[Action, Rule]] = {
    Action.INVITE: _rule({_ACCEPTED}, {MemberState.JOINED}, E.CALL_NOT_ACTIVE),
    Action.ACCEPT: _rule({_RINGING, _ACCEPTED}, {MemberState.RINGING}, E.CALL_NOT_RINGING),
    Action.DECLINE: _rule({_RINGING, _ACCEPTED}, {MemberState.RINGING}, E.CALL_NOT_RINGING),
    Action.CANCEL: _rule({_RINGING}, {MemberState.JOINED}, E.CALL_NOT_RINGING, caller_only=True),
    Action.HANGUP: _rule({_ACCEPTED}, {MemberState.JOINED}, E.CALL_NOT_ACTIVE),
    Action.UPDATE: _rule({_ACCEPTED}, {MemberState.JOINED}, E.CALL_NOT_ACTIVE),
}


def refusal(
    action: Action, call: CallState | None, member: MemberState | None, is_caller: bool
) -> str | None:
    """The error code refusing ``action``, or None when it is allowed.

    ``call``/``member`` None: no such call, or the requester is not part of it. Both get
    ``unknown_call``, so that nobody learns about other people's calls. The Lua script in
    calls/ringing.py checks in this same order.
    """
    if call is None or member is None:
        return E.UNKNOWN_CALL
    rule = RULES[action]
    if call not in rule.call_states:
        return rule.wrong_call_state
    if rule.caller_only and not is_caller:
        return rule.not_caller
    if member not in rule.member_states:
        return rule.wrong_member_state
    return None


def call_goes_on(joined: int, ringing: int) -> bool:
    """After someone leaves: does the call go on? (Mirrored by ``settle`` in the Lua script.)"""
    return joined >= 2 or (joined >= 1 and ringing >= 1)


# --- transitions and the events they produce --------------------------------------------

TransitionKind = Literal["invite", "accept", "decline", "cancel", "timeout", "hangup", "update"]


class Transition(msgspec.Struct, kw_only=True, frozen=True):
    """One change of a call, as the Lua script publishes it to each member's user channel.

    ``subject`` is the member whose own state changed (the invitee of ``invite`` and
    ``timeout``, the requester of ``accept``, ``decline`` and ``hangup``; empty for
    ``cancel`` and ``update``), ``inviter`` who invited the subject. ``members`` and
    ``state`` are as after the change; ``reason`` is set when the call ended.
    """

    to: str  # the user whose channel carried it
    call: str
    kind: TransitionKind
    actor: str  # the requesting user; empty for a ring timeout
    session: str  # the requesting connection: it gets the reply, never an event about it
    device: str
    subject: str = ""
    inviter: str = ""
    inviter_name: str = ""
    media: p.CallMedia = "audio"
    room: str = ""
    state: CallState
    reason: str = ""
    deadline_ms: float = 0  # ring deadline of an ``invite``: identifies that ring
    members: dict[str, MemberState]


_LEFT_REASON: Final[dict[str, p.CallLeftReason]] = {
    "decline": "declined",
    "timeout": "no_answer",
    "hangup": "hangup",
}


def events_for(t: Transition, user: str) -> list[p.Event]:
    """What every device of ``user`` (but the requesting connection) is told about ``t``."""
    call = t.call
    state = t.members.get(user)
    ended = t.state is CallState.ENDED
    if t.kind == "invite":
        if user == t.subject:
            return [
                p.CallIncoming(
                    seq=0, call=call, from_=t.inviter, from_name=t.inviter_name, media=t.media
                )
            ]
        if user == t.actor and t.state is CallState.RINGING:
            return [p.CallOutgoing(seq=0, call=call, to=t.subject, media=t.media)]
        return []
    if t.kind == "accept":
        if user == t.subject:
            return [p.CallAnsweredElsewhere(seq=0, call=call)]
        if state is MemberState.JOINED:
            return [p.CallAccepted(seq=0, call=call, room=t.room, device=t.device, by=t.subject)]
        return []
    if t.kind == "update":
        if state is MemberState.JOINED:
            return [p.CallUpdated(seq=0, call=call, media=t.media, by=t.actor)]
        return []
    if t.kind == "cancel":
        if state is MemberState.CANCELLED:
            return [p.CallCancelled(seq=0, call=call)]
        if user == t.actor:
            return [p.CallEnded(seq=0, call=call, reason="cancelled")]
        return []
    # decline, timeout, hangup: the subject left the call, which may have ended with it.
    if user == t.subject:
        if t.kind == "timeout":
            return [
                p.CallMissed(
                    seq=0, call=call, from_=t.inviter, from_name=t.inviter_name, media=t.media
                )
            ]
        return [p.CallEnded(seq=0, call=call, reason=_LEFT_REASON[t.kind])]
    if state is MemberState.CANCELLED and ended:
        return [p.CallCancelled(seq=0, call=call)]
    if state is not MemberState.JOINED:
        return []
    if not ended:
        return [p.CallLeft(seq=0, call=call, user=t.subject, reason=_LEFT_REASON[t.kind])]
    if t.kind == "decline":
        return [p.CallDeclined(seq=0, call=call, by=t.subject)]
    return [p.CallEnded(seq=0, call=call, reason=_LEFT_REASON[t.kind])]

"""The ringing script (``calls/lua/ringing.lua``): every change of a 1:1 or small group call
as one Lua script.

The script checks the request against ``calls.state.RULES`` (rendered into it, so Python
and Lua share one table), writes, and publishes the resulting ``calls.state.Transition`` to
the user channel of each member concerned. ``calls.ringing`` runs it.

Keys, all expiring:
- ``huddle:{call:ID}:call`` hash: state, caller, media, room, reason; and
  ``huddle:{call:ID}:members`` hash: user -> JSON of the member's state, who invited them,
  ring deadline, and the connection (session) and device it placed or accepted the call on.
  Ringing calls live ring timeout + keepalive; accepted ones are extended every
  ``presence_refresh_s`` by the nodes of their members' connections; ended ones stay
  ``ENDED_TTL_S`` so that late requests get a precise error rather than ``unknown_call``.
- ``huddle:{user:U}:call``: the call the user is in (placing it or accepted): the marker
  that makes an invite of that user ``busy``.
- ``huddle:{user:U}:ringing`` sorted set: calls ringing for the user by deadline, read when
  a device says hello.
- ``huddle:calls:ring-deadlines`` sorted set of every ringing invitation by deadline, swept
  by every node; the script's state check makes each timeout happen once.

The script touches the call's own keys only (one hash tag, so one shard of a Redis
Cluster). What a change means for keys of other tags (the users' markers and ringing sets,
the deadline index) and the fan-out come back from it as effects that ``calls.ringing``
applies right after (``MARKER`` changes a user's key only while it is still the call's); the
busy checks read the users' markers just before. A node dying between the two leaves rings
that expire with their keys instead of timing out, and markers that expire unless kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from calls.state import RULES
from signaling import keys
from signaling.lua import lua_script

DEADLINES: Final = "huddle:calls:ring-deadlines"


def call_key(call: str) -> str:
    return keys.call_key(call, "call")


def members_key(call: str) -> str:
    return keys.call_key(call, "members")


def user_call_key(user: str) -> str:
    return keys.user_key(user, "call")


def user_ringing_key(user: str) -> str:
    return keys.user_key(user, "ringing")


def user_call_channel(user: str) -> str:
    return keys.user_key(user, "calls")


def room_for(call: str) -> str:
    return f"call-{call}"


def _lua_set(values: Iterable[str]) -> str:
    return "{" + ", ".join(f"[{str(v)!r}] = true" for v in sorted(values)) + "}"


def render_rules() -> str:
    """``calls.state.RULES`` as a Lua table literal: the one table, used in Python and Lua."""
    rows = [
        f"  [{action.value!r}] = {{calls = {_lua_set(rule.call_states)}, "
        f"members = {_lua_set(rule.member_states)}, caller_only = "
        f"{'true' if rule.caller_only else 'false'}, call_err = {rule.wrong_call_state!r}, "
        f"member_err = {rule.wrong_member_state!r}, role_err = {rule.not_caller!r}}},"
        for action, rule in RULES.items()
    ]
    return "{\n" + "\n".join(rows) + "\n}"


SCRIPT: Final = "local RULES = " + render_rules() + "\n" + lua_script("calls", "ringing")
MARKER: Final = lua_script("calls", "marker")

"""Lua scripts for every chat write (``chat/lua``): each change is one script, so a crash
leaves no half state.

A conversation's keys share one hash tag (``{conv:ID}``) and a user's keys another
(``{user:ID}``); each script touches the keys of one of them only, but for the send
counters (chat.store.ChatStore.add_sends): many users' at once, on a cluster of one slot
(rate.lua, a key per user and second), on one Redis of any users (rate_hash.lua: every
user's counter of a second is a field of one hash, which send.lua adds to as well).

Events and messages are encoded by Python before the script runs, with markers where the
numbers the script assigns go: ``"ev":-1`` (conversation event number), ``"fev":-1`` (feed
event number), ``"seq":-2`` (message sequence number), ``"read_seq":-2`` and ``"users":[]``.
A marker is found by its quoted key: inside a JSON string every quote is escaped, so message
text can never contain one. ``"epoch":""`` and ``"feed_epoch":""`` take the log's epoch,
``"stamp":""`` the event's stamp (unique to it among every event ever logged, see
chat.resume.check_cursor).

Each log (a conversation's events, a user's feed) has an epoch beside its counter, made by
the script that writes the log's first event after the epoch went missing: with the
counter, when the keys were lost or Redis came back from a snapshot taken before the log
existed. A device's cursor carries it, so that numbers handed out again are never mistaken
for the events the device already has (see chat.resume).
"""

from __future__ import annotations

from typing import Final

from signaling.lua import lua_script

# Libraries prepended to the scripts that call them: ``log_epoch`` and ``log_stamp``
# (epoch.lua), then
# ``log_event`` and ``append_message`` (log.lua), which call it. The send script writes
# what ``append_message`` does in a way of its own (fewer commands: it is the hot path).
_EPOCH: Final = lua_script("chat", "epoch")
_PRELUDE: Final = _EPOCH + lua_script("chat", "log")

SEND: Final = _EPOCH + lua_script("chat", "send")
CREATE: Final = _PRELUDE + lua_script("chat", "create")
ENSURE_DIRECT: Final = lua_script("chat", "ensure_direct")
DIRECT_BLOCKS: Final = lua_script("chat", "direct_blocks")
DIRECT_BLOCK: Final = lua_script("chat", "direct_block")
MEMBERS: Final = _PRELUDE + lua_script("chat", "members")
REWRITE: Final = _PRELUDE + lua_script("chat", "rewrite")
REACT: Final = _PRELUDE + lua_script("chat", "react")
READ: Final = _PRELUDE + lua_script("chat", "read")
USER: Final = _EPOCH + lua_script("chat", "user")
ROTATE_EPOCH: Final = _EPOCH + lua_script("chat", "rotate_epoch")
RATE: Final = lua_script("chat", "rate")
RATE_HASH: Final = lua_script("chat", "rate_hash")
TRIM: Final = lua_script("chat", "trim")
WARM: Final = lua_script("chat", "warm")

"""Every Redis key and channel name, in one place.

Keys are prefixed ``huddle:`` and carry a Redis Cluster hash tag (``{user:ID}``,
``{call:ID}``, ``{room:ID}``) so that everything of one user, call or room lands on one
shard, where one Lua script may touch it all.
"""

from __future__ import annotations


def user_key(user: str, name: str) -> str:
    return f"huddle:{{user:{user}}}:{name}"


def call_key(call: str, name: str) -> str:
    return f"huddle:{{call:{call}}}:{name}"


def room_key(room: str, name: str) -> str:
    return f"huddle:{{room:{room}}}:{name}"


def node_channel(node: str) -> str:
    """The channel a node listens on for messages addressed to it alone."""
    return f"huddle:node:{node}"


def resume_key(user: str, device: str) -> str:
    """Set while a device that dropped out of a call may resume it: "node\\nroom"."""
    return user_key(user, f"resume:{device}")


def conv_key(conv: str, name: str) -> str:
    """Keys of one conversation: ``members`` (hash user -> role), ``log``, ``msgs``, ..."""
    return f"huddle:{{conv:{conv}}}:{name}"


def media_key(media: str, name: str) -> str:
    """Keys of one stored file: ``meta`` (hash) and ``shared`` (set of conversation ids)."""
    return f"huddle:{{media:{media}}}:{name}"


def media_store_key(name: str) -> str:
    """Keys of the media store as a whole: ``refs`` (hash blob digest -> references),
    ``orphans`` (sorted set of unreferenced digests by time), ``deleting`` (digests being
    collected)."""
    return f"huddle:{{media-store}}:{name}"

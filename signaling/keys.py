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

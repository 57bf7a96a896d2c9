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


# The media store's records share one hash tag, so that its scripts (a file's record, its
# owner's usage and reservations, the store's blob references, all in one step) run on one
# shard of a Redis Cluster. They are few and small next to chat's: one shard carries them.


def media_key(media: str, name: str) -> str:
    """Keys of one stored file: ``meta`` (hash), ``shared`` (set of conversation ids), and
    of one resumable upload: ``tus`` (hash), ``tus_lock``."""
    return f"huddle:{{media-store}}:file:{media}:{name}"


def media_owner_key(user: str, name: str) -> str:
    """Keys of one owner of files: ``media_usage`` (bytes stored), ``media`` (set of their
    files), ``media_uploads`` (hash upload id -> length reserved)."""
    return f"huddle:{{media-store}}:owner:{user}:{name}"


def media_store_key(name: str) -> str:
    """Keys of the media store as a whole: ``refs`` (hash blob digest -> references),
    ``orphans`` (sorted set of unreferenced digests by time), ``deleting`` (digests being
    collected)."""
    return f"huddle:{{media-store}}:{name}"

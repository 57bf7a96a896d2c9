"""Base classes and shared field types of every protocol message (see signaling.protocol).

Kept apart so that the messages of other areas (chat) can be declared in their own modules
and still join the one registry per direction in signaling.protocol.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

RequestId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Identity = Annotated[
    str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._@:+-]+$(?!\n)")
]


class Message(msgspec.Struct, tag_field="type", kw_only=True):
    """Base of every frame; ``type`` is the tag."""


class Request(Message, kw_only=True):
    id: RequestId


class Reply(Message, kw_only=True):
    re: str


class Ok(Reply, tag="ok", kw_only=True):
    """Plain success reply, for requests whose answer has no data."""


class Event(Message, kw_only=True):
    # Declared first so that it is encoded right after the tag (see EncodedEvent).
    seq: int

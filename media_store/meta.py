"""A stored file's metadata (a Redis hash) and who may see the file.

Chat calls ``get_meta`` / ``visible_meta`` to check a referenced file and embed its fields
in a message. Access rule: the owner, or a member of any conversation the file was shared
in (``media_key(id, "shared")``, a set the chat module adds conversation ids to).
"""

from __future__ import annotations

import json
import re
from typing import Final

import msgspec
import redis.asyncio as redis

from signaling.keys import conv_key, media_key

_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
THUMB_SIZES: Final = ("small", "large")


class MediaMeta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What is known of one stored file. ``digest`` is the SHA-256 of its contents."""

    id: str
    owner: str
    name: str
    size: int
    mime: str
    kind: str
    digest: str
    created: float
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    # Digests of derived blobs, served at /v1/media/{id}/thumb/{small|large} and
    # /v1/media/{id}/voice.
    thumb_small: str | None = None
    thumb_large: str | None = None
    voice: str | None = None
    # Peak levels 0..255 over the length of a voice note / audio file, for the UI.
    waveform: list[int] | None = None
    gps_stripped: bool = False

    @property
    def thumbnail(self) -> str | None:
        """The small thumbnail's id (its digest), if the file has one."""
        return self.thumb_small

    def blobs(self) -> list[str]:
        """Every blob this file references (duplicates kept: each is one reference)."""
        return [d for d in (self.digest, self.thumb_small, self.thumb_large, self.voice) if d]

    def public(self) -> dict[str, object]:
        """The fields a client sees (``digest`` is the ETag of the download)."""
        body: dict[str, object] = msgspec.to_builtins(self)
        body.pop("gps_stripped", None)
        body["thumbnails"] = [s for s in THUMB_SIZES if getattr(self, f"thumb_{s}")]
        return body


def valid_id(media_id: str) -> bool:
    return bool(_ID_RE.fullmatch(media_id))


def to_hash(meta: MediaMeta) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in msgspec.structs.asdict(meta).items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "1" if value else "0"
        elif isinstance(value, list):
            out[name] = json.dumps(value, separators=(",", ":"))
        else:
            out[name] = str(value)
    return out


_INTS: Final = ("size", "width", "height")
_FLOATS: Final = ("created", "duration")


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def from_hash(fields: dict[str, str]) -> MediaMeta | None:
    if "id" not in fields or "digest" not in fields:
        return None
    values: dict[str, object] = dict(fields)
    for name in _INTS:
        if name in fields:
            values[name] = int(fields[name])
    for name in _FLOATS:
        if name in fields:
            values[name] = float(fields[name])
    if "waveform" in fields:
        values["waveform"] = json.loads(fields["waveform"])
    if "gps_stripped" in fields:
        values["gps_stripped"] = fields["gps_stripped"] == "1"
    try:
        return msgspec.convert(values, MediaMeta)
    except msgspec.ValidationError:
        return None


async def get_meta(client: redis.Redis, media_id: str) -> MediaMeta | None:
    """The metadata of a stored file, or None if there is no such (complete) file."""
    if not valid_id(media_id):
        return None
    raw = await client.hgetall(media_key(media_id, "meta"))
    return from_hash({text(k): text(v) for k, v in raw.items()}) if raw else None


async def may_view(client: redis.Redis, meta: MediaMeta, user: str) -> bool:
    """The owner, or a member of a conversation the file was shared in."""
    if meta.owner == user:
        return True
    convs = await client.smembers(media_key(meta.id, "shared"))
    if not convs:
        return False
    async with client.pipeline(transaction=False) as pipe:
        for conv in convs:
            pipe.hexists(conv_key(text(conv), "members"), user)
        results = await pipe.execute()
    return any(results)


async def visible_meta(client: redis.Redis, media_id: str, user: str) -> MediaMeta | None:
    """The metadata if the file exists and ``user`` may see it (what chat checks)."""
    meta = await get_meta(client, media_id)
    if meta is None or not await may_view(client, meta, user):
        return None
    return meta

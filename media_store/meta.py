"""A stored file's metadata (a Redis hash) and who may see the file.

Chat calls ``get_meta`` / ``visible_meta`` to check a referenced file and embed its fields
in a message. Access rule: the owner, or a member of any conversation the file was shared
in (``media_key(id, "shared")``, a set the chat module adds conversation ids to).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Final

import msgspec
from redis.exceptions import NoScriptError

from signaling.keys import conv_key, media_key
from signaling.lua import lua_script
from signaling.redis_client import RedisClient

_ID_RE: Final = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
THUMB_SIZES: Final = ("small", "large")
# Records a node keeps in memory (a few hundred bytes each; waveforms up to ~1 KiB).
META_CACHE_CAPACITY: Final = 4096


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


async def get_meta(client: RedisClient, media_id: str) -> MediaMeta | None:
    """The metadata of a stored file, or None if there is no such (complete) file."""
    if not valid_id(media_id):
        return None
    raw = await client.hgetall(media_key(media_id, "meta"))
    return from_hash({text(k): text(v) for k, v in raw.items()}) if raw else None


class MetaCache:
    """Records already read, by file id, so that a download need not fetch every field.

    A file's record is written once and never changed, only deleted (ids are never reused),
    so a copy stays true; it is served only after ``find_visible``'s live check that the
    record still exists with the same ``created`` stamp and that the requester may see it.
    """

    def __init__(self, capacity: int = META_CACHE_CAPACITY) -> None:
        self.capacity = capacity
        self._metas: dict[str, tuple[str, MediaMeta]] = {}

    def get(self, media_id: str, created: str) -> MediaMeta | None:
        hit = self._metas.get(media_id)
        return hit[1] if hit is not None and hit[0] == created else None

    def put(self, created: str, meta: MediaMeta) -> None:
        if meta.id not in self._metas and len(self._metas) >= self.capacity:
            del self._metas[next(iter(self._metas))]  # the oldest
        self._metas[meta.id] = (created, meta)

    def __contains__(self, media_id: object) -> bool:
        return media_id in self._metas

    def __len__(self) -> int:
        return len(self._metas)


# The record and the owner's access in one round trip, read at one instant; every field only
# when the caller has no copy of the record. Another user's access is the membership of the
# conversations the file was shared in: one more round trip (they may be on other shards).
_VISIBLE: Final = lua_script("media_store", "visible")
_VISIBLE_SHA: Final = hashlib.sha1(_VISIBLE.encode()).hexdigest()
_MISSING, _HIDDEN, _SEEN, _IF_MEMBER = 0, 1, 2, 3


async def find_visible(
    client: RedisClient, media_id: str, user: str | None, known: MetaCache | None = None
) -> tuple[bool, MediaMeta | None]:
    """Whether the file exists, and its record if ``user`` may see it; one round trip for
    its owner, two for another user.

    ``user`` None skips the access check (a signed URL, checked by the caller). With
    ``known``, a record read once is not read again, only checked.
    """
    if not valid_id(media_id):
        return False, None
    copied = known is not None and media_id in known
    status, created, meta = await _visible(client, media_id, user, every_field=not copied)
    if status == _SEEN and meta is None and known is not None:
        meta = known.get(media_id, created)
        if meta is None:
            # Not the record the copy was made of: read it all.
            status, created, meta = await _visible(client, media_id, user, every_field=True)
    if status != _SEEN or meta is None:
        return status == _HIDDEN, None
    if known is not None:
        known.put(created, meta)
    return True, meta


async def _visible(
    client: RedisClient, media_id: str, user: str | None, *, every_field: bool
) -> tuple[int, str, MediaMeta | None]:
    """The script's status, the record's ``created`` stamp and, if asked, the record."""
    keys = (media_key(media_id, "meta"), media_key(media_id, "shared"))
    args = (user or "", "1" if every_field else "0", "0" if user is None else "1")
    try:
        reply = await client.evalsha(_VISIBLE_SHA, len(keys), *keys, *args)
    except NoScriptError:
        # EVAL also loads the script: later calls find it by its digest.
        reply = await client.eval(_VISIBLE, len(keys), *keys, *args)
    status = int(reply[0])
    if status == _IF_MEMBER:
        convs = [text(c) for c in reply[3:]]
        status = _SEEN if user and await _member_of_any(client, convs, user) else _HIDDEN
    if status != _SEEN:
        return status, "", None
    if not reply[2]:
        return status, text(reply[1]), None
    flat = [text(x) for x in reply[2]]
    meta = from_hash(dict(zip(flat[::2], flat[1::2], strict=True)))
    # A record that is not a complete file counts as no file, as in ``get_meta``.
    return (status, text(reply[1]), meta) if meta is not None else (_MISSING, "", None)


async def _member_of_any(client: RedisClient, convs: list[str], user: str) -> bool:
    async with client.pipeline(transaction=False) as pipe:
        for conv in convs:
            pipe.hexists(conv_key(conv, "members"), user)
        return any(await pipe.execute())


async def visible_meta(client: RedisClient, media_id: str, user: str) -> MediaMeta | None:
    """The metadata if the file exists and ``user`` may see it (what chat checks)."""
    return (await find_visible(client, media_id, user))[1]

"""The tus 1.0 resumable upload protocol (core, creation, creation-with-upload, termination,
expiration): header parsing and the checks each request must pass.

Pure module: no I/O. The handlers in ``media_store.tus_routes`` apply these rules.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Final

VERSION: Final = "1.0.0"
EXTENSIONS: Final = "creation,creation-with-upload,termination,expiration"
OFFSET_CONTENT_TYPE: Final = "application/offset+octet-stream"
MAX_METADATA_HEADER: Final = 4096
_KEY_RE: Final = re.compile(r"^[\x21-\x7e]{1,64}$")
_INT_RE: Final = re.compile(r"^[0-9]{1,19}$")


class TusError(Exception):
    """A request the protocol refuses: ``status`` and a Huddle error ``code``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def check_version(header: str | None) -> None:
    """Every request but OPTIONS names the protocol version it speaks (412 otherwise)."""
    if header != VERSION:
        raise TusError(412, "unsupported_version", f"Tus-Resumable must be {VERSION}")


def parse_int(header: str | None, name: str) -> int:
    if header is None:
        raise TusError(400, "bad_header", f"{name} is required")
    value = header.strip()
    if not _INT_RE.fullmatch(value):
        raise TusError(400, "bad_header", f"{name} must be a non-negative integer")
    return int(value)


def parse_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata``: comma-separated ``key base64value`` pairs (value optional)."""
    if not header:
        return {}
    if len(header) > MAX_METADATA_HEADER:
        raise TusError(400, "bad_metadata", "Upload-Metadata is too long")
    out: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        if len(parts) > 2 or not _KEY_RE.fullmatch(parts[0]):
            raise TusError(400, "bad_metadata", "Upload-Metadata pairs are `key base64value`")
        if parts[0] in out:
            raise TusError(400, "bad_metadata", f"Upload-Metadata key {parts[0]!r} is repeated")
        value = ""
        if len(parts) == 2:
            try:
                value = base64.b64decode(parts[1], validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                raise TusError(
                    400, "bad_metadata", f"Upload-Metadata {parts[0]!r} is not base64 UTF-8"
                ) from None
        out[parts[0]] = value
    return out


def encode_metadata(values: dict[str, str]) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


@dataclass(frozen=True)
class Creation:
    length: int
    metadata: dict[str, str]

    @property
    def name(self) -> str | None:
        return self.metadata.get("filename") or self.metadata.get("name")


def check_creation(
    *, length: str | None, defer: str | None, metadata: str | None, max_size: int
) -> Creation:
    """A ``POST`` creating an upload. Deferred length is not offered (no such extension)."""
    if defer is not None:
        raise TusError(400, "bad_header", "Upload-Defer-Length is not supported")
    size = parse_int(length, "Upload-Length")
    if size > max_size:
        raise TusError(413, "too_large", f"Upload-Length exceeds the limit of {max_size} bytes")
    return Creation(size, parse_metadata(metadata))


@dataclass(frozen=True)
class Patch:
    offset: int
    # How many body bytes may be taken: up to the declared length.
    room: int


def check_patch(
    *,
    content_type: str | None,
    offset: str | None,
    content_length: int | None,
    current: int,
    length: int,
) -> Patch:
    """A ``PATCH`` appending at ``Upload-Offset``, which must be where the upload stands."""
    if (content_type or "").split(";")[0].strip().lower() != OFFSET_CONTENT_TYPE:
        raise TusError(415, "bad_content_type", f"Content-Type must be {OFFSET_CONTENT_TYPE}")
    claimed = parse_int(offset, "Upload-Offset")
    if claimed != current:
        raise TusError(409, "bad_offset", f"Upload-Offset is {claimed}, the upload is at {current}")
    room = length - current
    if content_length is not None and content_length > room:
        raise TusError(
            413, "too_large", f"body of {content_length} bytes passes Upload-Length ({length})"
        )
    return Patch(claimed, room)

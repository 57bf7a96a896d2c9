"""HTTP rules of downloads and signed URLs: byte ranges, entity tags, URL signatures.

Pure module: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Final

MAX_RANGE_HEADER: Final = 200


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end - 1}/{size}"


class Unsatisfiable(Exception):
    """A syntactically valid range that lies outside the representation: 416."""


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range of a ``Range`` header, or None to send the whole body.

    A malformed header, or one asking for several ranges, is ignored (RFC 9110 allows it)
    and the whole body is sent. ``Unsatisfiable`` when the range starts past the end.
    """
    if not header or len(header) > MAX_RANGE_HEADER:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    first, last = first.strip(), last.strip()
    # ASCII digits only (RFC 9110's DIGIT): str.isdigit() also takes "²", which int() refuses.
    if not (_digits(first) or not first) or not (_digits(last) or not last):
        return None
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0:
            raise Unsatisfiable
        return ByteRange(max(0, size - suffix), size)
    start = int(first)
    end = size if not last else min(int(last) + 1, size)
    if last and int(last) < start:
        return None
    if start >= size:
        raise Unsatisfiable
    return ByteRange(start, end)


def etag_for(digest: str) -> str:
    """A strong entity tag: contents are addressed by their SHA-256, so it never goes stale."""
    return f'"{digest}"'


def none_match(header: str | None, etag: str) -> bool:
    """Whether ``If-None-Match`` matches ``etag`` (weak comparison, as RFC 9110 asks)."""
    if not header:
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def url_key(api_secret: str) -> bytes:
    """The key signing download URLs, derived so that it signs nothing else."""
    return hmac.new(api_secret.encode(), b"huddle media url v1", hashlib.sha256).digest()


def sign(key: bytes, media_id: str, expires: int) -> str:
    mac = hmac.new(key, f"{media_id}\n{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:24]).decode().rstrip("=")


def signature_valid(key: bytes, media_id: str, expires: str, sig: str, now: float) -> bool:
    """Whether a signed URL's ``exp`` and ``sig`` match and have not expired."""
    if not _digits(expires) or len(expires) > 12 or len(sig) > 64:
        return False
    if int(expires) < now:
        return False
    return hmac.compare_digest(sign(key, media_id, int(expires)), sig)


def _digits(text: str) -> bool:
    """Whether ``text`` is ASCII digits only (and not empty)."""
    return text.isascii() and text.isdigit()

"""Where file contents live: the blob store interface both backends implement.

Blobs are immutable and named by the SHA-256 of their contents, so ``put`` of a digest that
is already stored changes nothing (deduplication) and readers never see a partial blob.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final, Protocol

_DIGEST_RE: Final = re.compile(r"^[0-9a-f]{64}$")
READ_CHUNK: Final = 256 * 1024


def valid_digest(digest: str) -> bool:
    return bool(_DIGEST_RE.fullmatch(digest))


def blob_name(digest: str) -> str:
    """Relative name of a blob: two levels of fan-out keep directories small."""
    if not valid_digest(digest):
        raise ValueError("not a SHA-256 hex digest")
    return f"{digest[:2]}/{digest[2:4]}/{digest}"


class BlobStore(Protocol):
    async def put(self, digest: str, source: Path) -> None:
        """Store ``source``'s contents (whose SHA-256 is ``digest``) atomically.

        ``source`` is a local staging file; the store may take it (rename) or copy it, and
        the caller removes it afterwards if it is still there.
        """
        ...

    async def size(self, digest: str) -> int | None:
        """The stored blob's size, or None if there is no such blob."""
        ...

    def read(self, digest: str, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """Bytes ``start`` to ``end`` (exclusive) of a stored blob, in chunks."""
        ...

    async def delete(self, digest: str) -> None:
        """Remove a blob; no error if it is not there."""
        ...

    def list(self) -> AsyncIterator[tuple[str, float]]:
        """Every stored blob: (digest, modification time in epoch seconds)."""
        ...

    def local_path(self, digest: str) -> Path | None:
        """A path to serve with sendfile, when the blob is a local file."""
        ...

    async def close(self) -> None: ...

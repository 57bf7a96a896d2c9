"""Receiving a body to a local staging file as it arrives: bounded memory, limit enforced
while receiving, SHA-256 computed on the way.

Chunks are gathered up to ``FLUSH_BYTES`` and then written and hashed in a thread (hashlib
releases the GIL on large buffers), so the event loop neither blocks on the disk nor pays a
thread hop per small network read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

from media_store.errors import MediaError, too_large
from media_store.sniff import SNIFF_BYTES

FLUSH_BYTES: Final = 1024 * 1024
HASH_CHUNK: Final = 1024 * 1024


class Truncated(Exception):
    """The body ended (connection lost) before all that was announced arrived."""


@dataclass
class Received:
    size: int
    digest: str | None  # SHA-256 when the whole file went through this receive
    head: bytes


def staging_path(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"up-{secrets.token_hex(12)}.part"


def _write(f: BinaryIO, hasher: hashlib._Hash | None, chunks: list[bytes]) -> None:
    for chunk in chunks:
        f.write(chunk)
        if hasher is not None:
            hasher.update(chunk)


async def receive(
    chunks: AsyncIterator[bytes],
    f: BinaryIO,
    *,
    limit: int,
    hash_it: bool = True,
    limit_error: MediaError | None = None,
) -> Received:
    """Write ``chunks`` to ``f`` until they end. Raises ``limit_error`` (default: 413
    ``too_large``) as soon as more than ``limit`` bytes arrived; what was written before a
    failure stays in ``f`` (a resumable upload keeps it, a simple upload drops the file).
    """
    hasher = hashlib.sha256() if hash_it else None
    pending: list[bytes] = []
    pending_bytes = 0
    size = 0
    head = bytearray()
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            if size + len(chunk) > limit:
                raise limit_error or too_large(limit)
            size += len(chunk)
            if len(head) < SNIFF_BYTES:
                head += chunk[: SNIFF_BYTES - len(head)]
            pending.append(chunk)
            pending_bytes += len(chunk)
            if pending_bytes >= FLUSH_BYTES:
                batch, pending, pending_bytes = pending, [], 0
                await asyncio.to_thread(_write, f, hasher, batch)
    finally:
        # Whatever arrived is kept in the file even when the body fails half way.
        if pending:
            await asyncio.to_thread(_write, f, hasher, pending)
    return Received(size, hasher.hexdigest() if hasher is not None else None, bytes(head))


def file_digest(path: Path) -> tuple[str, int, bytes]:
    """SHA-256, size and head of a file (run in a thread)."""
    hasher = hashlib.sha256()
    size = 0
    head = b""
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            if not head:
                head = chunk[:SNIFF_BYTES]
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size, head


def remove(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

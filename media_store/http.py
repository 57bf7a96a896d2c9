"""Shared pieces of the media HTTP handlers: the service key, authentication, errors, and
sending a blob's bytes (sendfile for local files, streamed chunks from S3)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web

from media_store import http_rules, sendfile
from media_store.errors import MediaError
from media_store.service import MediaService
from media_store.sniff import content_disposition, content_type
from signaling.auth import AuthError
from signaling.http_common import json_error

log = logging.getLogger("huddle.media.http")

MEDIA = web.AppKey("media", MediaService)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# The bytes of a stored file never change for its id: caches may keep them.
CACHE_CONTROL: Final = "private, max-age=31536000, immutable"
# Downloads must never run as a page of our origin, whatever their type.
SANDBOX: Final = (
    "default-src 'none'; img-src 'self' data:; media-src 'self'; style-src 'unsafe-inline'; sandbox"
)


def identity(request: web.Request) -> str:
    """The authenticated user of a request (``Authorization: Bearer <JWT>``) or 401."""
    header = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MediaError(401, "unauthorized", "an Authorization: Bearer token is required")
    try:
        claims = request.app[MEDIA].tokens.verify(token.strip())
    except AuthError as exc:
        raise MediaError(401, "unauthorized", exc.message) from None
    return claims.identity


def error_response(exc: MediaError, *, close: bool = False) -> web.Response:
    resp = json_error(exc.status, exc.code, exc.message)
    if close:
        # The rest of a refused body is not read: the connection cannot be reused.
        resp.force_close()
    return resp


def media_errors(handler: Handler) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except MediaError as exc:
            return error_response(exc, close=request.method in ("POST", "PATCH", "PUT"))

    return wrapped


async def send_blob(
    request: web.Request,
    *,
    digest: str,
    size: int | None,
    mime: str,
    name: str,
    extra_headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """The blob's bytes with Range, ETag/If-None-Match and safe type and disposition.

    ``size`` None: the stored blob's own size (a derived blob, which has no record of it).
    """
    store = request.app[MEDIA].store
    etag = http_rules.etag_for(digest)
    headers = {
        hdrs.ETAG: etag,
        hdrs.CACHE_CONTROL: CACHE_CONTROL,
        hdrs.ACCEPT_RANGES: "bytes",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": SANDBOX,
        **(extra_headers or {}),
    }
    if http_rules.none_match(request.headers.get(hdrs.IF_NONE_MATCH), etag):
        return web.Response(status=304, headers=headers)
    path = store.local_path(digest)
    if path is None or sendfile.socket_fd(request.transport) is None:
        if size is None:
            size = await store.size(digest)
        if size is None:
            raise _missing(digest)
        return await _respond(
            request, headers, etag, size, mime, name, functools.partial(store.read, digest)
        )
    fd, size_on_disk = await _open(path, digest)
    try:
        size = size_on_disk if size is None else size
        return await _respond(request, headers, etag, size, mime, name, fd)
    finally:
        os.close(fd)


async def _respond(
    request: web.Request,
    headers: dict[str, str],
    etag: str,
    size: int,
    mime: str,
    name: str,
    body: int | Callable[[int, int], AsyncIterator[bytes]],
) -> web.StreamResponse:
    """The response for a blob of ``size`` bytes: ``body`` is a descriptor of the open file
    (sent with sendfile) or reads bytes ``start`` to ``end`` from the store."""
    byte_range = None
    if_range = request.headers.get(hdrs.IF_RANGE)
    if if_range is None or if_range.strip() == etag:
        try:
            byte_range = http_rules.parse_range(request.headers.get(hdrs.RANGE), size)
        except http_rules.Unsatisfiable:
            refused = json_error(416, "bad_range", f"the range lies outside the {size} bytes")
            refused.headers[hdrs.CONTENT_RANGE] = f"bytes */{size}"
            return refused
    start, end = (byte_range.start, byte_range.end) if byte_range else (0, size)
    headers[hdrs.CONTENT_TYPE] = content_type(mime)
    headers[hdrs.CONTENT_DISPOSITION] = content_disposition(mime, name)
    if byte_range is not None:
        headers[hdrs.CONTENT_RANGE] = byte_range.content_range(size)
    resp = web.StreamResponse(status=206 if byte_range else 200, headers=headers)
    resp.content_length = end - start
    await resp.prepare(request)
    try:
        if request.method != hdrs.METH_HEAD and end > start:
            if isinstance(body, int):
                transport = request.transport
                if transport is None:
                    raise ConnectionResetError("the connection closed before the download")
                await sendfile.send(transport, body, start, end - start)
            else:
                async for chunk in body(start, end):
                    await resp.write(chunk)
        await resp.write_eof()
    except ConnectionError:
        # Cut short: the connection must not carry another response.
        resp.force_close()
        log.debug("download interrupted", extra={"etag": etag})
    except EOFError:
        resp.force_close()
        log.error("stored blob shorter than its record", extra={"etag": etag})
    return resp


def _missing(digest: str) -> MediaError:
    log.error("stored blob missing", extra={"digest": digest})
    return MediaError(404, "not_found", "the file's contents are missing")


async def _open(path: Path, digest: str) -> tuple[int, int]:
    """A descriptor of the blob and its size, in one trip to the thread pool."""
    try:
        return await asyncio.to_thread(_open_sync, path)
    except FileNotFoundError:
        raise _missing(digest) from None


def _open_sync(path: Path) -> tuple[int, int]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fd, os.fstat(fd).st_size
    except BaseException:
        os.close(fd)
        raise

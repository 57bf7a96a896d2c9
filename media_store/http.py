"""Shared pieces of the media HTTP handlers: the service key, authentication, errors, and
sending a blob's bytes (sendfile for local files, streamed chunks from S3)."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web

from media_store import http_rules
from media_store.errors import MediaError
from media_store.service import MediaService
from media_store.sniff import content_disposition, content_type
from signaling.auth import AuthError, verify_token
from signaling.server import json_error

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
        claims = verify_token(token.strip(), keys=request.app[MEDIA].token_keys)
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
    size: int,
    mime: str,
    name: str,
    extra_headers: dict[str, str] | None = None,
) -> web.StreamResponse:
    """The blob's bytes with Range, ETag/If-None-Match and safe type and disposition."""
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
    if request.method == hdrs.METH_HEAD or end == start:
        await resp.write_eof()
        return resp
    try:
        if not await _sendfile(request, store.local_path(digest), start, end - start):
            async for chunk in store.read(digest, start, end):
                await resp.write(chunk)
        await resp.write_eof()
    except ConnectionError:
        log.debug("download interrupted", extra={"digest": digest})
    return resp


def _has_sendfile(loop: asyncio.AbstractEventLoop) -> bool:
    # uvloop inherits AbstractEventLoop.sendfile, which only raises NotImplementedError.
    return type(loop).sendfile is not asyncio.AbstractEventLoop.sendfile


async def _sendfile(request: web.Request, path: Path | None, offset: int, count: int) -> bool:
    """Send a local file with the kernel's sendfile, as aiohttp's own FileResponse does."""
    transport = request.transport
    loop = asyncio.get_running_loop()
    if (
        path is None
        or transport is None
        or not _has_sendfile(loop)
        or transport.get_extra_info("sslcontext")
    ):
        return False
    f = await asyncio.to_thread(path.open, "rb")
    try:
        await loop.sendfile(transport, f, offset, count)
    except NotImplementedError:
        return False
    finally:
        f.close()
    return True

"""Resumable uploads: the tus 1.0 protocol under ``/v1/media/tus/``.

An upload's id becomes the stored file's id. Its state (owner, length, offset, name,
expiry) is a Redis hash (``media_store.records``); its bytes so far are a file in
``media/tus``. From creation until it completes, is terminated or expires, an upload holds
its declared length against its owner's quota (``media_store.quota``), and an owner has at
most ``media_tus_max_open`` of them. The offset recorded is always what the file really
holds: bytes that arrived before a lost connection are kept, and the client resumes from the
offset ``HEAD`` reports. An upload with no progress for ``media_tus_expiry_s`` expires; the
periodic sweep (``media_store.gc``) then releases its reservation and removes its file. One
request at a time writes an upload (a Redis lock; another gets 423). Partial files live on
the node that received them, so a resumed upload must reach the same node (or a shared
volume).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import secrets
import time
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web

from media_store import staging, tus
from media_store.errors import MediaError, not_found
from media_store.http import MEDIA, error_response, identity
from media_store.meta import text, valid_id
from media_store.service import MediaService, new_id
from signaling.keys import media_key
from signaling.lua import lua_script

BASE: Final = "/v1/media/tus"
LOCK_TTL_MS: Final = 10 * 60 * 1000
RECEIVE_CHUNK: Final = 256 * 1024
_RELEASE: Final = lua_script("media_store", "unlock")


def _headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {"Tus-Resumable": tus.VERSION, "Cache-Control": "no-store", **(extra or {})}


def _fail(exc: MediaError | tus.TusError, *, close: bool = False) -> web.Response:
    resp = error_response(MediaError(exc.status, exc.code, exc.message), close=close)
    resp.headers["Tus-Resumable"] = tus.VERSION
    if exc.status == 412:
        resp.headers["Tus-Version"] = tus.VERSION
    return resp


async def options(request: web.Request) -> web.Response:
    settings = request.app[MEDIA].settings
    return web.Response(
        status=204,
        headers={
            "Tus-Resumable": tus.VERSION,
            "Tus-Version": tus.VERSION,
            "Tus-Extension": tus.EXTENSIONS,
            "Tus-Max-Size": str(settings.media_max_upload_bytes),
        },
    )


class _State:
    def __init__(self, raw: dict[str, str]) -> None:
        self.owner = raw["owner"]
        self.length = int(raw["length"])
        self.offset = int(raw["offset"])
        self.name = raw.get("name") or None
        self.expires = float(raw["expires"])


async def _load(service: MediaService, upload: str, user: str) -> _State:
    if not valid_id(upload):
        raise not_found()
    raw = await service.redis.hgetall(media_key(upload, "tus"))
    fields = {text(k): text(v) for k, v in raw.items()}
    if fields.get("owner") != user:
        raise not_found()
    state = _State(fields)
    if state.expires <= time.time():
        raise not_found()  # expired, and not yet swept
    return state


def _part(service: MediaService, upload: str) -> Path:
    return service.tus_dir / f"{upload}.part"


def _expires_header(expires: float) -> str:
    return email.utils.formatdate(expires, usegmt=True)


async def create(request: web.Request) -> web.Response:
    service = request.app[MEDIA]
    try:
        tus.check_version(request.headers.get("Tus-Resumable"))
        owner = identity(request)
        creation = tus.check_creation(
            length=request.headers.get("Upload-Length"),
            defer=request.headers.get("Upload-Defer-Length"),
            metadata=request.headers.get("Upload-Metadata"),
            max_size=service.settings.media_max_upload_bytes,
        )
        upload = new_id()
        expires = time.time() + service.settings.media_tus_expiry_s
        # The file first: a record never points at no file. A file left without a record
        # (refused below, or a crash) is removed by the sweep.
        part = _part(service, upload)
        await asyncio.to_thread(part.touch)
        try:
            await service.records.create_upload(
                upload,
                owner=owner,
                length=creation.length,
                name=creation.name or "",
                expires=expires,
                quota=service.settings.media_quota_bytes,
                max_open=service.settings.media_tus_max_open,
            )
        except MediaError:
            await asyncio.to_thread(part.unlink, True)
            raise
    except (MediaError, tus.TusError) as exc:
        return _fail(exc, close=True)
    location = f"{BASE}/{upload}"
    headers = _headers({"Location": location, "Upload-Expires": _expires_header(expires)})
    has_body = (request.content_length or 0) > 0 or request.headers.get(hdrs.TRANSFER_ENCODING)
    if has_body:  # creation-with-upload
        resp = await _append(request, service, upload, owner)
    elif creation.length == 0:
        # An empty file is complete once made: no PATCH follows (tus-js-client reports
        # success at once), so it is stored now.
        try:
            state = await _load(service, upload, owner)
        except MediaError as exc:
            return _fail(exc, close=True)
        resp = await _finish(service, upload, owner, state, part)
    else:
        return web.Response(status=201, headers=headers)
    if resp.status != 204:
        return resp
    headers["Upload-Offset"] = resp.headers["Upload-Offset"]
    if "Huddle-Media-Id" in resp.headers:  # complete: stored as this file
        headers["Huddle-Media-Id"] = resp.headers["Huddle-Media-Id"]
    return web.Response(status=201, headers=headers)


def _elsewhere() -> MediaError:
    return MediaError(
        404, "not_found", "this upload's bytes are on another node: upload the file again"
    )


async def _lock(service: MediaService, upload: str) -> str:
    """Take the upload's lock (one request writes or ends an upload at a time): its token,
    for ``_unlock``. 423 while another request holds it."""
    token = secrets.token_hex(8)
    if not await service.redis.set(media_key(upload, "tus_lock"), token, nx=True, px=LOCK_TTL_MS):
        raise MediaError(423, "locked", "another request is writing this upload")
    return token


async def _unlock(service: MediaService, upload: str, token: str) -> None:
    await service.redis.eval(_RELEASE, 1, media_key(upload, "tus_lock"), token)


async def _give_up_elsewhere(service: MediaService, upload: str, owner: str) -> None:
    """The upload was made on a node whose bytes this one cannot reach (no shared media
    folder): it cannot go on here. Its record and reservation go now, so that the client's
    new upload (tus clients start one when the old one is 404) fits in the quota; the other
    node's sweep removes the partial file once it has no record."""
    token = await _lock(service, upload)
    try:
        await service.records.release_upload(upload, owner)
    finally:
        await _unlock(service, upload, token)
    raise _elsewhere()


async def _part_here(service: MediaService, upload: str) -> bool:
    return await asyncio.to_thread(_part(service, upload).exists)


async def head(request: web.Request) -> web.Response:
    service = request.app[MEDIA]
    try:
        tus.check_version(request.headers.get("Tus-Resumable"))
        owner = identity(request)
        upload = request.match_info["upload"]
        state = await _load(service, upload, owner)
        if not await _part_here(service, upload):
            await _give_up_elsewhere(service, upload, owner)
    except (MediaError, tus.TusError) as exc:
        resp = _fail(exc)
        return web.Response(status=resp.status, headers=resp.headers)  # HEAD: no body
    return web.Response(
        status=200,
        headers=_headers(
            {
                "Upload-Offset": str(state.offset),
                "Upload-Length": str(state.length),
                "Upload-Expires": _expires_header(state.expires),
            }
        ),
    )


async def patch(request: web.Request) -> web.Response:
    service = request.app[MEDIA]
    try:
        tus.check_version(request.headers.get("Tus-Resumable"))
        owner = identity(request)
    except (MediaError, tus.TusError) as exc:
        return _fail(exc, close=True)
    return await _append(request, service, request.match_info["upload"], owner)


async def _append(
    request: web.Request, service: MediaService, upload: str, owner: str
) -> web.Response:
    """Write the body at the upload's offset; store the file once it is complete."""
    try:
        state = await _load(service, upload, owner)
        token = await _lock(service, upload)
    except MediaError as exc:
        return _fail(exc, close=True)
    try:
        if not await _part_here(service, upload):
            await service.records.release_upload(upload, owner)
            return _fail(_elsewhere(), close=True)
        return await _append_locked(request, service, upload, owner, state)
    finally:
        await _unlock(service, upload, token)


async def _append_locked(
    request: web.Request, service: MediaService, upload: str, owner: str, state: _State
) -> web.Response:
    part = _part(service, upload)
    try:
        check = tus.check_patch(
            content_type=request.headers.get(hdrs.CONTENT_TYPE),
            offset=request.headers.get("Upload-Offset", str(state.offset))
            if request.method == "POST"
            else request.headers.get("Upload-Offset"),
            content_length=request.content_length,
            current=state.offset,
            length=state.length,
        )
    except tus.TusError as exc:
        return _fail(exc, close=True)
    failure: MediaError | None = None
    try:
        f = await asyncio.to_thread(part.open, "r+b")
    except FileNotFoundError:
        return _fail(not_found(), close=True)
    try:
        # Bytes past the recorded offset are leftovers of a write that was cut short
        # before its offset was recorded: the recorded offset is the truth.
        await asyncio.to_thread(f.truncate, check.offset)
        f.seek(check.offset)
        try:
            await staging.receive(
                request.content.iter_chunked(RECEIVE_CHUNK),
                f,
                limit=check.room,
                hash_it=False,
                limit_error=MediaError(
                    413, "too_large", f"the body passes Upload-Length ({state.length})"
                ),
            )
        except MediaError as exc:
            failure = exc
        except web.HTTPRequestTimeout as exc:
            # What arrived before the stall is kept: the client resumes from HEAD.
            failure = MediaError(408, "request_timeout", f"{exc.text}; resume from HEAD")
        except Exception:
            failure = MediaError(400, "truncated", "the body ended early; resume from HEAD")
    finally:
        await asyncio.to_thread(f.flush)
        offset = f.tell()
        f.close()
    if failure is not None and failure.code == "too_large":
        # The part within the length was kept; nothing past it.
        offset = min(offset, state.length)
    expires = time.time() + service.settings.media_tus_expiry_s
    if not await service.records.upload_progress(upload, offset, expires):
        # Terminated meanwhile: its file is gone or going.
        return _fail(not_found(), close=True)
    if failure is not None:
        return _fail(failure, close=True)
    if offset < state.length:
        expires = expires if offset > state.offset else state.expires
        return web.Response(
            status=204,
            headers=_headers(
                {"Upload-Offset": str(offset), "Upload-Expires": _expires_header(expires)}
            ),
        )
    return await _finish(service, upload, owner, state, part)


async def _finish(
    service: MediaService, upload: str, owner: str, state: _State, part: Path
) -> web.Response:
    digest, size, head_bytes = await asyncio.to_thread(staging.file_digest, part)
    try:
        meta = await service.ingest(
            part,
            owner=owner,
            name=state.name,
            digest=digest,
            size=size,
            head=head_bytes,
            media_id=upload,
        )
    except MediaError as exc:
        await _forget(service, upload, owner)
        return _fail(exc, close=True)
    # The commit has already turned the reservation into the file's size.
    await _forget(service, upload, owner)
    return web.Response(
        status=204,
        headers=_headers({"Upload-Offset": str(size), "Huddle-Media-Id": meta.id}),
    )


async def _forget(service: MediaService, upload: str, owner: str) -> None:
    await service.records.release_upload(upload, owner)
    with contextlib.suppress(FileNotFoundError):
        _part(service, upload).unlink()


async def terminate(request: web.Request) -> web.Response:
    service = request.app[MEDIA]
    upload = request.match_info["upload"]
    try:
        tus.check_version(request.headers.get("Tus-Resumable"))
        owner = identity(request)
        await _load(service, upload, owner)
        # Not under a request still writing it: that one would record its progress after.
        token = await _lock(service, upload)
    except (MediaError, tus.TusError) as exc:
        return _fail(exc)
    try:
        await _forget(service, upload, owner)
    finally:
        await _unlock(service, upload, token)
    return web.Response(status=204, headers=_headers())


def add_routes(app: web.Application) -> None:
    for path in (BASE, BASE + "/"):
        app.router.add_route("OPTIONS", path, options)
        app.router.add_post(path, create)
    upload = BASE + "/{upload}"
    app.router.add_route("HEAD", upload, head)
    app.router.add_patch(upload, patch)
    app.router.add_delete(upload, terminate)
    app.router.add_route("OPTIONS", upload, options)

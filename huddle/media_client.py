"""Huddle's Python client for files: uploads (simple and resumable, tus 1.0), downloads,
metadata, signed URLs.

    async with MediaClient("http://127.0.0.1:8080", token) as media:
        meta = await media.upload(Path("photo.jpg"))
        meta = await media.upload_resumable(Path("big.mp4"))   # survives lost connections
        data = await media.download(meta["id"])

Bodies are streamed from files or async iterators, never held whole in memory. Errors
answered by the server raise ``MediaRequestError`` with its ``status`` and ``code``.
See docs/media.md.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
from collections.abc import AsyncIterable, AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import aiohttp

TUS_VERSION: Final = "1.0.0"
DEFAULT_CHUNK: Final = 8 * 1024 * 1024
READ_CHUNK: Final = 256 * 1024
RESUME_RETRIES: Final = 5
RESUME_DELAY_S: Final = 0.2

Source = bytes | Path | AsyncIterable[bytes]


class MediaRequestError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


async def _raise_for(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    code, message = "http_error", resp.reason or ""
    with contextlib.suppress(Exception):
        body = await resp.json(content_type=None)
        code, message = body["error"]["code"], body["error"]["message"]
    raise MediaRequestError(resp.status, code, message)


async def file_chunks(
    path: Path, start: int = 0, count: int | None = None, chunk: int = READ_CHUNK
) -> AsyncIterator[bytes]:
    """Bytes of a file read in a thread, ``count`` of them from ``start``."""
    f = await asyncio.to_thread(path.open, "rb")
    try:
        await asyncio.to_thread(f.seek, start)
        left = count
        while left is None or left > 0:
            data = await asyncio.to_thread(f.read, chunk if left is None else min(chunk, left))
            if not data:
                break
            if left is not None:
                left -= len(data)
            yield data
    finally:
        f.close()


class MediaClient:
    def __init__(
        self, base_url: str, token: str, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._http = session
        self._own_http = session is None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession()
        return self._http

    async def close(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.close()
            self._http = None

    def _auth(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **(extra or {})}

    def url(self, path: str) -> str:
        return path if path.startswith("http") else self.base_url + path

    # --- simple upload ---------------------------------------------------------------

    async def upload(self, source: Source, name: str | None = None) -> dict[str, Any]:
        """Upload in one request; the server streams the body to disk as it arrives."""
        headers = self._auth({"Content-Type": "application/octet-stream"})
        data: Any
        if isinstance(source, Path):
            name = name or source.name
            size = (await asyncio.to_thread(source.stat)).st_size
            headers["Content-Length"] = str(size)
            data = file_chunks(source)
        elif isinstance(source, bytes):
            data = io.BytesIO(source)  # aiohttp warns about large raw bytes bodies
        else:
            data = source
        params = {"name": name} if name else {}
        async with self.http.post(
            self.url("/v1/media"), data=data, headers=headers, params=params
        ) as resp:
            await _raise_for(resp)
            body: dict[str, Any] = await resp.json()
            return body

    # --- resumable upload (tus 1.0) ---------------------------------------------------

    async def create_upload(self, length: int, name: str | None = None) -> str:
        """Start a resumable upload; returns its URL."""
        headers = self._auth({"Tus-Resumable": TUS_VERSION, "Upload-Length": str(length)})
        if name:
            headers["Upload-Metadata"] = "filename " + base64.b64encode(name.encode()).decode()
        async with self.http.post(self.url("/v1/media/tus/"), headers=headers) as resp:
            await _raise_for(resp)
            return self.url(resp.headers["Location"])

    async def upload_offset(self, upload_url: str) -> int:
        """How many bytes of the upload the server holds (where to resume)."""
        headers = self._auth({"Tus-Resumable": TUS_VERSION})
        async with self.http.head(upload_url, headers=headers) as resp:
            if resp.status >= 400:
                raise MediaRequestError(resp.status, "upload_unknown", "HEAD refused")
            return int(resp.headers["Upload-Offset"])

    async def send_chunk(
        self, upload_url: str, offset: int, body: Any, length: int
    ) -> tuple[int, str | None]:
        """One PATCH at ``offset``; returns the new offset and, when complete, the file id."""
        headers = self._auth(
            {
                "Tus-Resumable": TUS_VERSION,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
                "Content-Length": str(length),
            }
        )
        async with self.http.patch(upload_url, data=body, headers=headers) as resp:
            await _raise_for(resp)
            return int(resp.headers["Upload-Offset"]), resp.headers.get("Huddle-Media-Id")

    async def upload_resumable(
        self,
        path: Path,
        name: str | None = None,
        *,
        upload_url: str | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        retries: int = RESUME_RETRIES,
        chunks: Callable[[Path, int, int], AsyncIterable[bytes]] | None = None,
        on_url: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Upload ``path`` in PATCHes of ``chunk_size``; after a lost connection ask the
        server where it stands (HEAD) and go on from there. ``upload_url`` resumes an
        upload started earlier (even by another process). ``chunks`` replaces the file
        reader (tests use it to cut a connection half way)."""
        length = (await asyncio.to_thread(path.stat)).st_size
        if upload_url is None:
            upload_url = await self.create_upload(length, name or path.name)
        if on_url is not None:
            on_url(upload_url)
        reader = chunks or (lambda p, start, count: file_chunks(p, start, count))
        offset = await self.upload_offset(upload_url)
        failures = 0
        media_id: str | None = None
        while media_id is None:
            count = min(chunk_size, length - offset)
            try:
                offset, media_id = await self.send_chunk(
                    upload_url, offset, reader(path, offset, count), count
                )
                failures = 0
                if offset >= length and media_id is None:
                    raise MediaRequestError(500, "incomplete", "upload complete without a file id")
            except (TimeoutError, aiohttp.ClientError, ConnectionError) as exc:
                failures += 1
                if failures > retries:
                    raise MediaRequestError(0, "connection_lost", str(exc)) from exc
                await asyncio.sleep(RESUME_DELAY_S * failures)
                offset = await self._resume_offset(upload_url)
            except MediaRequestError as exc:
                if exc.code not in ("locked", "bad_offset", "truncated") or failures >= retries:
                    raise
                failures += 1
                await asyncio.sleep(RESUME_DELAY_S * failures)
                offset = await self._resume_offset(upload_url)
        return await self.meta(media_id)

    async def _resume_offset(self, upload_url: str) -> int:
        for attempt in range(RESUME_RETRIES):
            try:
                return await self.upload_offset(upload_url)
            except (aiohttp.ClientError, ConnectionError):
                await asyncio.sleep(RESUME_DELAY_S * (attempt + 1))
        return await self.upload_offset(upload_url)

    async def cancel_upload(self, upload_url: str) -> None:
        headers = self._auth({"Tus-Resumable": TUS_VERSION})
        async with self.http.delete(upload_url, headers=headers) as resp:
            await _raise_for(resp)

    # --- files -----------------------------------------------------------------------

    async def meta(self, media_id: str) -> dict[str, Any]:
        async with self.http.get(
            self.url(f"/v1/media/{media_id}/meta"), headers=self._auth()
        ) as resp:
            await _raise_for(resp)
            body: dict[str, Any] = await resp.json()
            return body

    async def download(
        self, media_id_or_url: str, *, byte_range: tuple[int, int | None] | None = None
    ) -> bytes:
        """The file's bytes (or bytes ``start`` to ``end`` inclusive). A ``/v1/...`` URL
        (a signed one, a thumbnail) may be given instead of an id."""
        parts = [chunk async for chunk in self.stream(media_id_or_url, byte_range=byte_range)]
        return b"".join(parts)

    async def stream(
        self, media_id_or_url: str, *, byte_range: tuple[int, int | None] | None = None
    ) -> AsyncIterator[bytes]:
        path = media_id_or_url if "/" in media_id_or_url else f"/v1/media/{media_id_or_url}"
        headers = {} if "sig=" in path else self._auth()
        if byte_range is not None:
            start, end = byte_range
            headers["Range"] = f"bytes={start}-{'' if end is None else end}"
        async with self.http.get(self.url(path), headers=headers) as resp:
            await _raise_for(resp)
            async for chunk in resp.content.iter_chunked(READ_CHUNK):
                yield chunk

    async def download_to(self, media_id: str, target: Path) -> int:
        """Stream a file to ``target``; returns the bytes written."""
        written = 0
        with target.open("wb") as f:
            async for chunk in self.stream(media_id):
                await asyncio.to_thread(f.write, chunk)
                written += len(chunk)
        return written

    async def sign(self, media_id: str) -> str:
        """A signed download URL (absolute) that needs no token until it expires."""
        async with self.http.post(
            self.url(f"/v1/media/{media_id}/sign"), headers=self._auth()
        ) as resp:
            await _raise_for(resp)
            return self.url(str((await resp.json())["url"]))

    async def delete(self, media_id: str) -> None:
        async with self.http.delete(
            self.url(f"/v1/media/{media_id}"), headers=self._auth()
        ) as resp:
            await _raise_for(resp)

    async def usage(self) -> dict[str, int]:
        async with self.http.get(self.url("/v1/media/usage"), headers=self._auth()) as resp:
            await _raise_for(resp)
            body: dict[str, int] = await resp.json()
            return body

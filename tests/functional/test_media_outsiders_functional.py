"""The media store gives outsiders no existence oracle, over real HTTP and real Redis: a user
who may not see a file, or who did not start an upload, gets the very same response for its
id as for an id that names nothing. Those who may see a file still get precise errors."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import pytest
import redis.asyncio as redis

from media_store.service import new_id
from signaling.keys import conv_key, media_key
from tests import media_files
from tests.helpers import Node, make_token

# Headers that differ between any two responses whatever they answer.
VOLATILE = {"Date", "Server"}


@dataclass(frozen=True)
class Answer:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def auth(user: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(user)}", **extra}


def tus(user: str, **extra: str) -> dict[str, str]:
    return auth(user, **{"Tus-Resumable": "1.0.0", **extra})


async def fetch(
    method: str, url: str, headers: dict[str, str], data: bytes | None = None
) -> Answer:
    # A session per request: a refused body closes the connection, which must not decide
    # what the next request sees.
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, url, headers=headers, data=data) as resp,
    ):
        kept = sorted((k, v) for k, v in resp.headers.items() if k not in VOLATILE)
        return Answer(resp.status, tuple(kept), await resp.read())


async def upload(node: Node, user: str, data: bytes, name: str) -> dict[str, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{node.url}/v1/media?name={name}", data=data, headers=auth(user)) as resp,
    ):
        assert resp.status == 201, await resp.text()
        body: dict[str, str] = await resp.json()
        return body


# Every request on a stored file: (method, path after /v1/media/{id}, extra headers).
FILE_REQUESTS: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "", {}),
    ("HEAD", "", {}),
    ("GET", "", {"Range": "bytes=0-9"}),
    ("GET", "/meta", {}),
    ("GET", "/thumb/small", {}),
    ("GET", "/thumb/large", {}),
    ("GET", "/thumb/huge", {}),
    ("GET", "/voice", {}),
    ("POST", "/sign", {}),
    ("DELETE", "", {}),
]


@pytest.mark.redis_cluster
async def test_files_look_missing_to_whoever_may_not_see_them(node: Node) -> None:
    picture = await upload(node, "alice", media_files.png((64, 48)), "p.png")
    real, missing = picture["id"], new_id()
    leaks = {}
    for method, tail, extra in [
        *FILE_REQUESTS,
        # Even the file's ETag, which a cache would answer 304 to, tells an outsider nothing.
        ("GET", "", {"If-None-Match": f'"{picture["digest"]}"'}),
    ]:
        seen = await fetch(method, f"{node.url}/v1/media/{real}{tail}", auth("bob", **extra))
        unseen = await fetch(method, f"{node.url}/v1/media/{missing}{tail}", auth("bob", **extra))
        if seen != unseen or seen.status != 404:
            leaks[method, tail, tuple(extra)] = (seen, unseen)
    assert not leaks, leaks
    # None of it touched the file.
    meta = await fetch("GET", f"{node.url}/v1/media/{real}/meta", auth("alice"))
    assert meta.status == 200


async def test_those_who_see_a_file_keep_precise_errors(
    node: Node, redis_client: redis.Redis
) -> None:
    picture = await upload(node, "alice", media_files.png((64, 48)), "p.png")
    url = f"{node.url}/v1/media/{picture['id']}"
    # Shared in a conversation carol is in: she sees it, but only its owner deletes it.
    await redis_client.hset(conv_key("c-outsiders", "members"), "carol", "member")
    await redis_client.sadd(media_key(picture["id"], "shared"), "c-outsiders")
    assert (await fetch("GET", url, auth("carol"))).status == 200
    refused = await fetch("DELETE", url, auth("carol"))
    assert refused.status == 403 and b'"forbidden"' in refused.body
    no_voice = await fetch("GET", f"{url}/voice", auth("carol"))
    assert no_voice.status == 404 and b"voice" in no_voice.body
    assert (await fetch("DELETE", url, auth("alice"))).status == 204


async def test_uploads_look_missing_to_all_but_their_creator(node: Node) -> None:
    base = f"{node.url}/v1/media/tus/"
    async with (
        aiohttp.ClientSession() as http,
        http.post(base, headers=tus("alice", **{"Upload-Length": "100"})) as resp,
    ):
        assert resp.status == 201
        real = resp.headers["Location"].rsplit("/", 1)[1]
    part = tus("alice", **{"Content-Type": "application/offset+octet-stream", "Upload-Offset": "0"})
    assert (await fetch("PATCH", base + real, part, b"x" * 10)).status == 204
    missing = new_id()
    patch = {"Content-Type": "application/offset+octet-stream", "Upload-Offset": "10"}
    leaks = {}
    for method, extra, body in (
        ("HEAD", {}, None),
        ("PATCH", patch, b"y" * 10),
        ("DELETE", {}, None),
    ):
        theirs = await fetch(method, base + real, tus("bob", **extra), body)
        nobodys = await fetch(method, base + missing, tus("bob", **extra), body)
        if theirs != nobodys or theirs.status != 404:
            leaks[method] = (theirs, nobodys)
    assert not leaks, leaks
    # The upload is untouched: alice resumes where she was.
    head = await fetch("HEAD", base + real, tus("alice"))
    assert head.status == 200 and ("Upload-Offset", "10") in head.headers

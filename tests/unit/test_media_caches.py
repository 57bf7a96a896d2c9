"""The download path's caches: verified tokens (until their expiry) and file records."""

from __future__ import annotations

import time

import pytest

from media_store.meta import MediaMeta, MetaCache
from media_store.tokens import TokenCache
from signaling.auth import LEEWAY_S, AuthError, mint_token

KEYS = {"key": "secret-0123456789-0123456789-0123456789"}


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def token(identity: str = "alice", ttl_s: int = 60, secret: str = KEYS["key"]) -> str:
    return mint_token(api_key="key", api_secret=secret, identity=identity, ttl_s=ttl_s)


def test_a_verified_token_is_kept_until_it_expires() -> None:
    clock = Clock()
    cache = TokenCache(KEYS, clock=clock)
    alice = token(ttl_s=60)
    assert cache.verify(alice).identity == "alice"
    assert len(cache) == 1
    assert cache.verify(alice).identity == "alice"  # from memory
    clock.now += 60 + LEEWAY_S - 1
    assert cache.verify(alice).identity == "alice"
    clock.now += 2
    with pytest.raises(AuthError) as expired:
        cache.verify(alice)
    assert expired.value.code == "token_expired"
    assert len(cache) == 0


def test_refused_tokens_are_never_kept() -> None:
    cache = TokenCache(KEYS)
    forged = token(secret="another-secret-0123456789-0123456789")
    for bad in (forged, "not a token", token()[:-3] + "AAA"):
        with pytest.raises(AuthError):
            cache.verify(bad)
        with pytest.raises(AuthError):  # refused again: no memory of the attempt
            cache.verify(bad)
    assert len(cache) == 0


def test_the_cache_is_bounded() -> None:
    cache = TokenCache(KEYS, capacity=3)
    tokens = [token(f"user{i}") for i in range(5)]
    for t in tokens:
        cache.verify(t)
    assert len(cache) == 3
    assert [cache.verify(t).identity for t in tokens] == [f"user{i}" for i in range(5)]
    assert len(cache) == 3


def meta(media_id: str = "A" * 22, name: str = "a.txt") -> MediaMeta:
    return MediaMeta(
        id=media_id,
        owner="alice",
        name=name,
        size=3,
        mime="text/plain",
        kind="text",
        digest="0" * 64,
        created=1.5,
    )


def test_a_record_copy_serves_only_the_record_it_was_made_of() -> None:
    cache = MetaCache(capacity=2)
    first = meta()
    cache.put("1.5", first)
    assert first.id in cache
    assert cache.get(first.id, "1.5") is first
    # Another record under the same id (made again): the copy is not it.
    assert cache.get(first.id, "2.5") is None
    assert cache.get("B" * 22, "1.5") is None
    for i in range(3):
        cache.put("1.5", meta(f"{i}" * 22))
    assert len(cache) == 2
    assert first.id not in cache

"""Script calls on their own pipelined connection (signaling.script_pipe): each caller gets
its own answer, in a database other than 0 too, and errors as redis-py raises them."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import NoScriptError, ResponseError

from signaling.redis_client import RedisClient, connect, run_script


async def test_concurrent_calls_each_get_their_own_answer(redis_client: RedisClient) -> None:
    script = redis_client.register_script(
        "redis.call('INCR', KEYS[1]) return {ARGV[1], redis.call('GET', KEYS[1])}"
    )
    key = "huddle:{conv:pipe}:n"
    await redis_client.delete(key)
    answers = await asyncio.gather(
        *(run_script(redis_client, script, [key], [f"call-{i}"]) for i in range(300))
    )
    assert [a[0] for a in answers] == [f"call-{i}".encode() for i in range(300)]
    # Run in the order they were made: the counter each saw.
    assert [int(a[1]) for a in answers] == list(range(1, 301))
    await redis_client.delete(key)


async def test_a_client_of_another_database_writes_there(redis_url: str) -> None:
    if not redis_url.startswith("unix://"):
        pytest.skip("one Redis only")
    other = connect(f"{redis_url}?db=3")
    try:
        script = other.register_script("return redis.call('SET', KEYS[1], ARGV[1])")
        await other.script_flush()
        assert await run_script(other, script, ["huddle:{conv:db}:k"], ["three"]) == b"OK"
        assert await other.get("huddle:{conv:db}:k") == b"three"
        await other.delete("huddle:{conv:db}:k")
    finally:
        await other.aclose()


async def test_errors_are_redis_py_s(redis_client: RedisClient) -> None:
    script = redis_client.register_script("return redis.call('NOSUCHCOMMAND')")
    with pytest.raises(ResponseError, match=r"(?i)unknown redis command") as info:
        await run_script(redis_client, script, ["huddle:{conv:e}:k"], [])
    assert not isinstance(info.value, NoScriptError)
    # The connection goes on: a good call after the refused one.
    ok = redis_client.register_script("return ARGV[1]")
    assert await run_script(redis_client, ok, ["huddle:{conv:e}:k"], ["fine"]) == b"fine"

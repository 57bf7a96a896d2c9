"""Script calls on their own pipelined connection (signaling.script_pipe): each caller gets
its own answer, in a database other than 0 too, and errors as redis-py raises them."""

from __future__ import annotations

import asyncio

import pytest
from hiredis import pack_command
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from signaling import script_pipe
from signaling.redis_client import RedisClient, connect, run_script


@pytest.mark.single_redis(
    "the calls share signaling.script_pipe's one pipelined connection, in the order made; a "
    "cluster client takes pooled connections (past 256 at once to a shard it fails at once)"
)
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


async def test_a_call_redis_does_not_answer_times_out_and_the_next_reconnects(
    redis_url: str, redis_client: RedisClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not redis_url.startswith("unix://"):
        pytest.skip("one Redis only")
    monkeypatch.setattr(script_pipe, "REPLY_TIMEOUT_S", 0.3)
    pipe = script_pipe.ScriptPipe(path=redis_url.removeprefix("unix://"))
    try:
        assert await pipe.call(pack_command(("PING",))) == b"PONG"
        # Every other client's commands wait for a second.
        paused = asyncio.get_running_loop().time()
        await redis_client.execute_command("CLIENT", "PAUSE", 1000, "ALL")
        waiting = [asyncio.ensure_future(pipe.call(pack_command(("PING",)))) for _ in range(3)]
        done, _ = await asyncio.wait(waiting, timeout=0.9)
        assert len(done) == 3  # all given up on well before Redis answers
        for call in waiting:
            with pytest.raises(RedisTimeoutError):
                call.result()
        # A new connection, answered once the pause is over.
        await asyncio.sleep(max(0.0, paused + 1.1 - asyncio.get_running_loop().time()))
        assert await pipe.call(pack_command(("PING",))) == b"PONG"
    finally:
        await pipe.aclose()

"""Client CPU per pub/sub message read by the broker, its own reader against redis-py's.

A redis-server of its own (or ``--redis-url``, one Redis) and, in another process, a
publisher that sends ``--messages`` messages on one channel at ``--rate`` a second, one
``SPUBLISH`` at a time as chat sends do. This process runs only the broker, subscribed to
that channel with a handler that counts, on uvloop as the node: its CPU (``getrusage``) over
the messages is what reading them costs. The two readers take turns, ``--rounds`` times each.

    python -m benchmarks.pubsub_read --rate 2000 --messages 20000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import redis as sync_redis

from benchmarks.procs import run_loop
from huddle.redis_server import spawn_sync
from signaling.broker import Broker
from signaling.redis_client import connect

CHANNEL = "huddle:{conv:bench}:chan"
# About a chat event's size on the wire.
PAYLOAD = b'{"t":"chat.event","conv":"d-0123456789abcdef","ev":1,' + b'"x":"' + b"m" * 200 + b'"}'


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def publish(url: str, messages: int, rate: float) -> None:
    """The publisher's process: ``messages`` SPUBLISHes, paced, then one ``end``."""
    client = sync_redis.Redis.from_url(url)
    start = time.monotonic()
    for n in range(messages):
        due = start + n / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        client.spublish(CHANNEL, PAYLOAD)
    client.spublish(CHANNEL, b"end")
    client.close()


async def read_round(url: str, own_reader: bool, messages: int, rate: float) -> dict[str, float]:
    client = connect(url)
    broker = Broker(client, "pubsub-read", own_reader=own_reader)
    await broker.start()
    got = 0
    done = asyncio.get_running_loop().create_future()

    def handler(data: bytes) -> None:
        nonlocal got
        if data == b"end":
            if not done.done():
                done.set_result(None)
            return
        got += 1

    await broker.subscribe(CHANNEL, handler)
    cpu0, wall0 = _cpu_s(), time.monotonic()
    publisher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.pubsub_read", "--publish", url,
        "--messages", str(messages), "--rate", str(rate),
    )  # fmt: skip
    try:
        await asyncio.wait_for(done, timeout=messages / rate + 30)
    finally:
        await publisher.wait()
    cpu, wall = _cpu_s() - cpu0, time.monotonic() - wall0
    await broker.stop()
    await client.aclose()
    if got != messages:
        raise RuntimeError(f"{got} of {messages} messages read")
    return {"messages": got, "cpu_s": cpu, "wall_s": wall, "us_per_message": cpu / got * 1e6}


async def run(url: str, messages: int, rate: float, rounds: int) -> list[dict[str, object]]:
    results: list[dict[str, object]] = []
    for n in range(rounds):
        # Each round in turn; which goes first alternates.
        for own in (True, False) if n % 2 == 0 else (False, True):
            figures = await read_round(url, own, messages, rate)
            name = "own" if own else "redis-py"
            results.append({"reader": name, "round": n + 1, **figures})
            print(
                f"round {n + 1} {name:8s}: {figures['us_per_message']:6.1f} µs of client CPU "
                f"per message ({messages} at {rate:g}/s)",
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", help="one Redis (default: a redis-server of its own)")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=2_000.0, help="messages a second")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the figures there")
    parser.add_argument("--publish", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.messages < 1 or args.rate <= 0 or args.rounds < 1:
        parser.error("--messages, --rate and --rounds must be positive")
    if args.publish:
        publish(args.publish, args.messages, args.rate)
        return
    with tempfile.TemporaryDirectory(prefix="pubsub-read-") as tmp:
        proc = None
        url = args.redis_url
        if url is None:
            proc, url = spawn_sync(Path(tmp) / "redis")
        try:
            # On uvloop, as the node runs.
            results = run_loop(run(url, args.messages, args.rate, args.rounds))
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(10)
    if args.json:
        args.json.write_text(json.dumps({"benchmark": "pubsub_read", "rounds": results}, indent=1))


if __name__ == "__main__":
    main()

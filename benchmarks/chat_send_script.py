"""The send script alone: Redis's CPU per chat send, and what it runs.

Starts a redis-server of its own (as a node's embedded one: a unix socket, append-only
file), makes direct conversations, and sends ``--sends`` messages through
``chat.store.ChatStore.send`` round-robin over them, ``--concurrency`` at a time, with one
reader subscribed to every conversation's channel (as a node is). Reports Redis's CPU
(``INFO cpu``) per send, the script's own time per call (``INFO commandstats``) and the
commands the script ran per send. Each send carries its sender's counter of the second,
as a node on one Redis passes it.

With ``--rate R`` the sends go one at a time, paced at R a second: Redis wakes for each, as
it does under a node at a chat's usual rates, where every cost is paid with cold caches
(several times the figures of back-to-back sends).

    python -m benchmarks.chat_send_script --sends 20000 --json PATH
    python -m benchmarks.chat_send_script --sends 4000 --rate 400
    python -m benchmarks.chat_send_script --sends 4000 --rate 800 --no-aof
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import command_stats
from chat import wire as w
from chat.store import ChatStore, SendCount, conv_channel, direct_id
from huddle.redis_server import spawn_sync
from signaling.redis_client import connect


def _cpu(info: dict[str, Any]) -> float:
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


async def _run(args: argparse.Namespace, url: str, pid: int) -> dict[str, Any]:
    client = connect(url)
    if args.no_aof:
        await client.config_set("appendonly", "no")
    appendonly = (await client.config_get("appendonly"))["appendonly"]
    store = ChatStore(client, replay_events=args.maxlen, feed_events=100)
    convs = []
    for i in range(args.convs):
        a, b = f"a{i}", f"b{i}"
        conv = direct_id(a, b)
        await store.ensure_direct(conv, a, b, 1)
        convs.append((conv, a))
    sub = client.pubsub()
    await sub.execute_command("SSUBSCRIBE", *[conv_channel(c) for c, _ in convs])
    received = 0

    async def read() -> None:
        nonlocal received
        while True:
            reply = await sub.parse_response(block=True)
            if reply and reply[0] in (b"smessage", "smessage"):
                received += 1

    reader = asyncio.create_task(read())
    counter = 0

    async def one(n: int) -> None:
        conv, sender = convs[n % len(convs)]
        msg = w.ChatMessage(
            seq=-2,
            ts=int(time.time() * 1000),
            sender=sender,
            kind="text",
            client_id=f"c{n:08d}",
            text=f"message {n} of the send script benchmark",
        )
        await store.send(conv, msg, count=SendCount(int(time.time())))

    async def worker(first: int) -> None:
        nonlocal counter
        while counter < args.sends:
            n = counter
            counter += 1
            await one(n + first)

    async def paced() -> None:
        start = time.perf_counter()
        for n in range(args.sends):
            late = start + n / args.rate - time.perf_counter()
            if late > 0:
                await asyncio.sleep(late)
            await one(n)

    # Warm: the script loaded, the conversations' keys made.
    for n in range(len(convs)):
        await one(10**9 + n)
    await client.config_resetstat()
    perf = None
    if args.perf:
        perf = await asyncio.create_subprocess_exec(
            "perf",
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "4000",
            "-g",
            "-p",
            str(pid),
            "-o",
            str(args.perf),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        await asyncio.sleep(1.0)
    before = _cpu(await client.info("cpu"))
    started = time.perf_counter()
    own = time.process_time()
    if args.rate:
        await paced()
    else:
        await asyncio.gather(*(worker(0) for _ in range(args.concurrency)))
    own = time.process_time() - own
    wall = time.perf_counter() - started
    await asyncio.sleep(0.2)
    after = _cpu(await client.info("cpu"))
    stats = command_stats(await client.info("commandstats"))
    if perf is not None:
        perf.send_signal(signal.SIGINT)
        await perf.wait()
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    await sub.aclose()
    await client.aclose()
    sends = args.sends
    script = stats.get("evalsha", (0, 0))
    inner = {
        k: round(c / sends, 2)
        for k, (c, _) in stats.items()
        if k not in ("evalsha", "info", "config|resetstat")
    }
    inner_us = {
        k: round(u / sends, 2)
        for k, (_, u) in stats.items()
        if k not in ("evalsha", "info", "config|resetstat")
    }
    return {
        "sends": sends,
        "rate": args.rate,
        "appendonly": appendonly,
        "wall_s": round(wall, 3),
        "sends_per_s": round(sends / wall),
        "redis_cpu_us_per_send": round((after - before) * 1e6 / sends, 1),
        # This process: the sends' Python (the store's encoding, the call) and its reader.
        "client_cpu_us_per_send": round(own * 1e6 / sends, 1),
        "script_us_per_call": round(script[1] / max(script[0], 1), 1),
        "commands_per_send": inner,
        "commands_total_per_send": round(sum(inner.values()), 2),
        "commands_us_per_send": inner_us,
        "commands_total_us_per_send": round(sum(inner_us.values()), 1),
        "received": received,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=20000)
    parser.add_argument("--convs", type=int, default=250)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--maxlen", type=int, default=10000)
    parser.add_argument(
        "--rate", type=float, default=0, help="sends a second, one at a time (0: back to back)"
    )
    parser.add_argument(
        "--no-aof",
        action="store_true",
        help="Redis without its append-only file (a node's has one): what writing it costs",
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument("--perf", type=Path, help="perf record redis-server into this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="send-script-") as tmp:
        proc, url = spawn_sync(Path(tmp) / "redis")
        try:
            result = asyncio.run(_run(args, url, proc.pid))
        finally:
            proc.terminate()
            proc.wait()
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()

"""Shared test support: in-process nodes, node processes, tokens, clients."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from redis.asyncio.cluster import RedisCluster

from huddle.call import CallClient
from huddle.client import HuddleClient
from huddle.config import Settings
from sfu.room import Room
from signaling.auth import Grants, mint_token
from signaling.redis_client import RedisClient

TEST_SECRET = "test-secret-0123456789-0123456789-0123456789"
TEST_KEY = "test-key"


def make_token(
    identity: str,
    *,
    ttl_s: int = 3600,
    key: str = TEST_KEY,
    secret: str = TEST_SECRET,
    **grants: Any,
) -> str:
    return mint_token(
        api_key=key, api_secret=secret, identity=identity, ttl_s=ttl_s, grants=Grants(**grants)
    )


@dataclass
class Node:
    """A node running in the test's event loop on a loopback port."""

    app: web.Application
    runner: web.AppRunner
    settings: Settings
    clients: list[HuddleClient] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def client(
        self,
        identity: str,
        *,
        device: str | None = None,
        hello: bool = True,
        grants: dict[str, Any] | None = None,
        **kw: Any,
    ) -> HuddleClient:
        """A client of this node with a token for ``identity`` (and ``grants``)."""
        c = HuddleClient(self.url, make_token(identity, **(grants or {})), device=device, **kw)
        self.clients.append(c)
        await c.connect()
        if hello:
            await c.hello()
        return c

    async def call(
        self, identity: str, room: str, *, trickle: bool = False, **grants: Any
    ) -> CallClient:
        """A client of this node that has joined ``room``."""
        call = CallClient(await self.client(identity, grants=grants), room, trickle=trickle)
        await call.join()
        return call

    async def raw_ws(
        self, session: aiohttp.ClientSession, **kw: Any
    ) -> aiohttp.ClientWebSocketResponse:
        ws: aiohttp.ClientWebSocketResponse = await session.ws_connect(f"{self.url}/v1/ws", **kw)
        return ws

    async def stop(self) -> None:
        for c in self.clients:
            await c.close()
        await self.runner.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class NodeProcess:
    """A real ``huddle serve`` process."""

    def __init__(
        self,
        data_dir: Path,
        *,
        redis_url: str | None,
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.port = port or free_port()
        self.data_dir = data_dir
        full_env = {
            k: v for k, v in os.environ.items() if not k.startswith("HUDDLE_") and k != "REDIS_URL"
        }
        full_env.update(HUDDLE_API_KEY=TEST_KEY, HUDDLE_API_SECRET=TEST_SECRET)
        if redis_url:
            full_env["REDIS_URL"] = redis_url
        full_env.update(env or {})
        self.log_path = data_dir / f"node-{self.port}.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "huddle",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(data_dir),
                *(args or []),
            ],
            env=full_env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_healthy(self, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"node exited: {self.log_path.read_text()[-2000:]}")
                try:
                    async with http.get(f"{self.url}/healthz") as resp:
                        if resp.status == 200:
                            body: dict[str, Any] = await resp.json()
                            return body
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node not healthy: {self.log_path.read_text()[-2000:]}")
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def terminate(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def local_room(node: Node, name: str) -> Room:
    """The SFU room object of a node running its rooms in-process (``sfu_workers=0``)."""
    from signaling.server import HUB

    local = node.app[HUB].calls.local
    assert local is not None, "the node runs SFU workers: rooms are in other processes"
    return local.rooms[name]


async def eventually(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` is true (TimeoutError after ``timeout``)."""
    async with asyncio.timeout(timeout):
        # State that events change from callbacks has no Event to wait on: poll it.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def all_keys(client: RedisClient, pattern: str) -> list[str]:
    """The keys matching ``pattern`` on one Redis or on every master of a cluster."""
    if isinstance(client, RedisCluster):
        found = await client.keys(pattern, target_nodes=RedisCluster.PRIMARIES)
    else:
        found = await client.keys(pattern)
    return [k.decode() if isinstance(k, bytes) else str(k) for k in found]


async def cut_pubsub(client: RedisClient) -> None:
    """Close every pub/sub connection of the test's Redis (on a cluster, of every master:
    CLIENT KILL alone goes to one node), as when the network drops them."""
    if isinstance(client, RedisCluster):
        await client.client_kill_filter(_type="pubsub", target_nodes=RedisCluster.PRIMARIES)
    else:
        await client.client_kill_filter(_type="pubsub")


def run_benchmark(
    module: str, *args: str, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    """``python -m benchmarks.MODULE ARGS`` to its end (at most ``timeout`` s), its output
    kept as text, no stdin."""
    return subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


async def node_samples(
    url: str, name: str, http: aiohttp.ClientSession | None = None, **labels: str
) -> list[Sample]:
    """The samples called ``name`` in the /metrics of the node at ``url`` whose labels
    include ``labels``, read with ``http`` (else a session of its own)."""
    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            http = await stack.enter_async_context(aiohttp.ClientSession())
        async with http.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    return [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as redis
from aiohttp import web

from huddle.app import create_app
from huddle.config import Settings
from huddle.http_guard import NodeRunner
from huddle.redis_server import spawn_sync
from tests.helpers import TEST_KEY, TEST_SECRET, Node

StartNode = Callable[..., Awaitable[Node]]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the whole run (or HUDDLE_TEST_REDIS_URL)."""
    external = os.environ.get("HUDDLE_TEST_REDIS_URL")
    if external:
        yield external
        return
    proc, url = spawn_sync(tmp_path_factory.mktemp("redis"))
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()


def test_settings(redis_url: str, data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "data_dir": data_dir,
        "port": 0,
        "api_key": TEST_KEY,
        "api_secret": TEST_SECRET,
        "log_format": "text",
        # Rooms in the node's own process unless a test asks for worker processes.
        "sfu_workers": 0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
async def start_node(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> AsyncIterator[StartNode]:
    """Start in-process nodes on loopback sharing the test Redis; stopped at the end."""
    nodes: list[Node] = []

    async def start(**overrides: Any) -> Node:
        settings = test_settings(redis_url, tmp_path / f"node{len(nodes)}", **overrides)
        app = create_app(settings)
        runner = NodeRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        node = Node(app=app, runner=runner, settings=settings)
        nodes.append(node)
        return node

    try:
        yield start
    finally:
        for node in reversed(nodes):
            await node.stop()


@pytest.fixture
async def node(start_node: StartNode) -> Node:
    return await start_node()

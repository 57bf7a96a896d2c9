from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

# Imported here, at a shallow stack, though few tests use it: otherwise a run whose tests do
# not import it has hypothesis's pytest plugin import it in the terminal summary, deep in
# pluggy's stack, where CPython 3.11.7's ast.parse (pytest rewrites hypothesis's modules)
# fails with "SystemError: AST constructor recursion depth mismatch" and the run exits 1
# after every test passed.
import hypothesis  # noqa: F401
import pytest
from aiohttp import web

from huddle.app import create_app
from huddle.config import Settings
from huddle.http_guard import NodeRunner
from huddle.redis_server import spawn_sync
from signaling.redis_client import CLUSTER_SCHEME, RedisClient, connect
from tests.helpers import TEST_KEY, TEST_SECRET, Node
from tests.redis_cluster import RedisCluster

StartNode = Callable[..., Awaitable[Node]]


FUNCTIONAL = Path(__file__).parent / "functional"
BROWSER = Path(__file__).parent / "browser"
REDIS_MODES = ("both", "single", "cluster")
# Functional tests that measure time or rates (the benchmarks' smoke runs, RTP timing under
# loss, caps and slow readers, failover windows), marked ``serial`` with every browser test:
# scripts/test.sh runs them alone, after the others have run on several workers. A test in
# another file can be marked ``serial`` by itself (test_load_deployment_functional.py: the
# load generators' runs whose checks are counts run with the others, its SFU runs alone).
SERIAL_FILES = frozenset(
    f"test_{name}_functional.py"
    for name in (
        "call_quality",
        "chat_load",
        "history_load",
        "history_search",
        "media_load",
        "sfu_load",
        "signaling_load",
        "web_load",
        "downlink",
        "simulcast",
        "loss",
        "slow_clients",
        "redis_failover",
        "history_kill",
    )
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--redis",
        choices=REDIS_MODES,
        default="single",
        help="the Redis of the functional suite's Redis-backed tests: one redis-server (single, "
        "the default), a Redis Cluster, or each test on both; tests marked redis_cluster run "
        "on both whatever this says",
    )


def pytest_configure(config: pytest.Config) -> None:
    workers = getattr(config.option, "numprocesses", None)  # pytest-xdist's -n
    if workers and os.environ.get("HUDDLE_TEST_REDIS_URL"):
        # Each test flushes its Redis: workers sharing one would erase each other's keys.
        raise pytest.UsageError("HUDDLE_TEST_REDIS_URL takes one pytest process, not workers")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(BROWSER) or item.path.name in SERIAL_FILES:
            item.add_marker(pytest.mark.serial)


def _redis_params(metafunc: pytest.Metafunc) -> list[str]:
    """Where a Redis-backed test runs: those marked redis_cluster on one Redis and again on a
    cluster; those marked redis_any (a Redis of their own, or media and HTTP paths that the
    test Redis does not carry: a second run on the cluster would repeat the first) on one
    Redis; other functional tests where ``--redis`` says; the rest on one Redis."""
    definition = metafunc.definition
    if definition.get_closest_marker("redis_cluster"):
        return ["single", "cluster"]
    if definition.get_closest_marker("redis_any"):
        return ["single"]
    if os.environ.get("HUDDLE_TEST_REDIS_URL") or not definition.path.is_relative_to(FUNCTIONAL):
        return ["single"]
    if definition.get_closest_marker("single_redis"):
        return ["single"]
    mode: str = metafunc.config.getoption("redis")
    return ["single", "cluster"] if mode == "both" else [mode]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "redis_url" not in metafunc.fixturenames:
        return
    if any(
        "redis_url" in str(m.args[0] if m.args else m.kwargs.get("argnames", ""))
        for m in metafunc.definition.iter_markers("parametrize")
    ):
        return  # the test picks its Redis itself
    params = _redis_params(metafunc)
    if params != ["single"]:
        # Session scope: pytest runs every test on one Redis first, then on the cluster,
        # which is started once.
        metafunc.parametrize("redis_url", params, indirect=True, scope="session")


@pytest.fixture(autouse=True)
def _single_redis_only(request: pytest.FixtureRequest) -> None:
    """Skip a test marked ``single_redis(reason)`` where its Redis is a cluster (a run with
    ``HUDDLE_TEST_REDIS_URL=redis+cluster://...``): it relies on what one server alone does."""
    marker = request.node.get_closest_marker("single_redis")
    if marker is None or "redis_url" not in request.fixturenames:
        return
    url: str = request.getfixturevalue("redis_url")
    if url.startswith(f"{CLUSTER_SCHEME}://"):
        pytest.skip(f"single Redis only: {marker.args[0]}")


@pytest.fixture(scope="session")
def single_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
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


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisCluster]:
    """A real Redis Cluster (3 masters, 3 replicas) for the whole run, started on first use."""
    cluster = RedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The Redis of the test: one redis-server, or the cluster for the ``[cluster]`` run of a
    test marked ``redis_cluster``."""
    if getattr(request, "param", "single") == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    url: str = request.getfixturevalue("single_redis_url")
    return url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[RedisClient]:
    client = connect(redis_url)
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
    redis_url: str, redis_client: RedisClient, tmp_path: Path
) -> AsyncIterator[StartNode]:
    """Start in-process nodes on loopback sharing the test Redis; stopped at the end."""
    nodes: list[Node] = []

    async def start(**overrides: Any) -> Node:
        data_dir = overrides.pop("data_dir", tmp_path / f"node{len(nodes)}")
        url = overrides.pop("redis_url", redis_url)
        settings = test_settings(url, data_dir, **overrides)
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

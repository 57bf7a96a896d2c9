"""The node's Redis client: one Redis (``redis://``, ``unix://``) or a Redis Cluster
(``redis+cluster://host:port[,host:port...]``), behind one type.

Everything above this module speaks to either through redis-py's common command set: every
script and transaction touches keys of one hash tag (``signaling.keys``), so it runs on a
single shard, and pipelines that span tags are non-transactional (the cluster client splits
them by shard).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeAlias, TypeGuard, cast
from urllib.parse import unquote

import redis.asyncio as redis
from hiredis import pack_command
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.crc import key_slot
from redis.event import (
    AsyncAfterSlotsCacheRefreshEvent,
    AsyncEventListenerInterface,
    EventDispatcher,
)
from redis.exceptions import (
    BusyLoadingError,
    ClusterDownError,
    NoScriptError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from signaling.reply_pipe import PlainRedis
from signaling.script_pipe import ScriptPipe

RedisClient: TypeAlias = redis.Redis | RedisCluster
# What a command may raise while Redis is out of reach: what background work (pub/sub, the
# hub's periodic jobs) rides out. The cluster client's "no node answers" and "slot not
# covered" (RedisClusterException) are no RedisError.
UNREACHABLE_ERRORS: Final = (RedisError, RedisClusterException, OSError)
# Of those, what a client's request may be answered "unavailable, retry" for: Redis out of
# reach, loading, or failing over. A script's own error (a bug, a key of the wrong type) or
# a full disk is no reason to retry: the request fails as internal.
RETRY_LATER_ERRORS: Final = (
    RedisConnectionError,
    RedisTimeoutError,
    BusyLoadingError,
    ClusterDownError,
    TryAgainError,
    ReadOnlyError,
    RedisClusterException,
)
RedisPipeline: TypeAlias = Pipeline | ClusterPipeline

CLUSTER_SCHEME: Final = "redis+cluster"

# Connections to one Redis per node. Callers beyond that wait for a free one (up to the pool
# timeout) instead of failing, as redis-py's default pool does at its limit.
MAX_CONNECTIONS: Final = 64
POOL_TIMEOUT_S: Final = 5.0
# redis-py's cluster client has no waiting pool: past its limit a command fails at once, so
# each shard gets more room than one Redis does.
CLUSTER_MAX_CONNECTIONS: Final = 256
CONNECT_TIMEOUT_S: Final = 2.0
SOCKET_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class ClusterUrl:
    seeds: list[tuple[str, int]]
    username: str | None = None
    password: str | None = None


def parse_cluster_url(url: str) -> ClusterUrl:
    """``redis+cluster://[user:password@]host:port[,host:port...]``; ValueError if malformed."""
    prefix = f"{CLUSTER_SCHEME}://"
    if not url.startswith(prefix):
        raise ValueError(f"a cluster URL starts with {prefix}")
    rest = url[len(prefix) :]
    if "?" in rest or "#" in rest or rest.rstrip("/").count("/"):
        raise ValueError(f"{CLUSTER_SCHEME} URL takes no path, database or options: {url!r}")
    rest = rest.rstrip("/")
    username: str | None = None
    password: str | None = None
    if "@" in rest:
        auth, rest = rest.rsplit("@", 1)
        user, sep, secret = auth.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if sep else None
        if not sep:
            # One word is a password, as with redis:// URLs.
            username, password = None, unquote(user)
    seeds: list[tuple[str, int]] = []
    for part in rest.split(","):
        host, sep, port = part.strip().rpartition(":")
        host = host.strip("[]")
        if (
            not sep
            or not host
            or not (port.isascii() and port.isdigit())
            or not 0 < int(port) < 65536
        ):
            raise ValueError(f"{CLUSTER_SCHEME} URL: expected host:port, got {part!r}")
        seeds.append((host, int(port)))
    return ClusterUrl(seeds, username, password)


def check_url(url: str) -> None:
    """Raise ValueError when ``url`` is not a Redis URL the node can use."""
    if url.startswith(f"{CLUSTER_SCHEME}://"):
        parse_cluster_url(url)
        return
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f"REDIS_URL must start with redis://, rediss://, unix:// or {CLUSTER_SCHEME}://"
        )


def is_cluster(client: RedisClient) -> TypeGuard[RedisCluster]:
    # Not isinstance: a typing.Protocol among RedisCluster's bases makes it cost ~1 us a
    # call (a chat send's hot path asks twice). Asked once per class.
    return _cluster_class(type(client))


@functools.cache
def _cluster_class(kind: type) -> bool:
    return issubclass(kind, RedisCluster)


# The topology events of each cluster client this module made (slots moved, a replica
# promoted): the broker re-subscribes on them and tells its callers to read back.
_TOPOLOGY: weakref.WeakKeyDictionary[RedisCluster, EventDispatcher] = weakref.WeakKeyDictionary()


def _retry() -> Retry:
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=3)


class ScriptCalls(Protocol):
    """A connection that takes script calls packed (``signaling.pubsub_pipe.PubSubPipe``)."""

    async def call(self, command: bytes) -> Any: ...


class _Redis(redis.Redis):
    """One Redis, with a connection of its own for the hot path's script calls
    (``run_script``), closed with the client; ``calls``, while set, takes them instead (the
    broker's pub/sub connection, which the broker closes)."""

    scripts: ScriptPipe | None = None
    calls: ScriptCalls | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self.scripts is not None:
            await self.scripts.aclose()
        await super().aclose(close_connection_pool)


def plain_redis(client: RedisClient) -> PlainRedis | None:
    """Where the client's one Redis is, if its connections are plain (no TLS, no credential
    provider, replies not decoded); else None (a cluster too): redis-py's own way is taken."""
    if isinstance(client, RedisCluster):
        return None
    pool = client.connection_pool
    kw = pool.connection_kwargs
    if kw.get("credential_provider") is not None or kw.get("decode_responses"):
        return None
    username, password, db = kw.get("username"), kw.get("password"), int(kw.get("db") or 0)
    if pool.connection_class is redis.UnixDomainSocketConnection:
        return PlainRedis(path=str(kw["path"]), username=username, password=password, db=db)
    if pool.connection_class is redis.Connection:
        host, port = str(kw.get("host", "localhost")), int(kw.get("port", 6379))
        return PlainRedis(host=host, port=port, username=username, password=password, db=db)
    return None


def _script_pipe(client: redis.Redis) -> ScriptPipe | None:
    """A pipe to the client's Redis where its connections are plain: else None, and script
    calls take pooled connections."""
    where = plain_redis(client)
    if where is None:
        return None
    return ScriptPipe(
        path=where.path,
        host=where.host,
        port=where.port,
        username=where.username,
        password=where.password,
        db=where.db,
    )


def share_script_calls(client: RedisClient, calls: ScriptCalls | None) -> None:
    """Have ``client``'s script calls (``run_script``) go through ``calls`` (None: through
    its own script connection again). A client of a cluster, or not made by ``connect``,
    is left as it is."""
    if isinstance(client, _Redis):
        client.calls = calls


def connect(url: str) -> RedisClient:
    """A client for ``url``; a cluster client finds its shards on first use."""
    check_url(url)
    if not url.startswith(f"{CLUSTER_SCHEME}://"):
        pool = redis.BlockingConnectionPool.from_url(
            url,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_TIMEOUT_S,
            socket_connect_timeout=CONNECT_TIMEOUT_S,
            socket_timeout=SOCKET_TIMEOUT_S,
            retry=_retry(),
            retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
        )
        client = cast(_Redis, _Redis.from_pool(pool))
        client.scripts = _script_pipe(client)
        return client
    parsed = parse_cluster_url(url)
    events = EventDispatcher()
    cluster = RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.seeds],
        username=parsed.username,
        password=parsed.password,
        max_connections=CLUSTER_MAX_CONNECTIONS,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        retry=_retry(),
        event_dispatcher=events,
    )
    _TOPOLOGY[cluster] = events
    return cluster


class _TopologyListener(AsyncEventListenerInterface):
    def __init__(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._callback = callback

    async def listen(self, event: object) -> None:
        await self._callback()


def on_topology_change(client: RedisCluster, callback: Callable[[], Awaitable[None]]) -> None:
    """Call ``callback`` after the client refreshed its map of slots to shards."""
    events = _TOPOLOGY.get(client)
    if events is None:
        raise ValueError("not a cluster client made by signaling.redis_client.connect")
    events.register_listeners({AsyncAfterSlotsCacheRefreshEvent: [_TopologyListener(callback)]})


# Scripts queued on each cluster pipeline: (position in the pipeline, script, keys, args).
_QUEUED: weakref.WeakKeyDictionary[
    ClusterPipeline, list[tuple[int, AsyncScript, list[str], list[EncodableT]]]
] = weakref.WeakKeyDictionary()


def _text_of(script: AsyncScript) -> str:
    text = script.script
    return text.decode() if isinstance(text, bytes) else str(text)


def queue_script(
    pipe: RedisPipeline, script: AsyncScript, keys: Sequence[str], args: Sequence[EncodableT]
) -> None:
    """Queue ``script`` on ``pipe`` by its digest; run the pipeline with ``execute``.

    redis-py loads a pipeline's scripts into one Redis before running it, but not into a
    cluster's shards (nor into a replica promoted since): ``execute`` runs the calls that
    met a shard without the script again with its text, which the shard then keeps.
    """
    if isinstance(pipe, ClusterPipeline):
        _QUEUED.setdefault(pipe, []).append((len(pipe), script, list(keys), list(args)))
    else:
        # What redis-py's own script call does on a pipeline (its set is typed for sync ones).
        pipe.scripts.add(script)  # type: ignore[arg-type]
    pipe.evalsha(script.sha, len(keys), *keys, *args)


async def execute(pipe: RedisPipeline) -> list[Any]:
    """``pipe.execute()``, for pipelines with scripts queued by ``queue_script``."""
    queued = _QUEUED.pop(pipe, []) if isinstance(pipe, ClusterPipeline) else []
    if not queued:
        return list(await pipe.execute())
    results = list(await pipe.execute(raise_on_error=False))
    missing = [q for q in queued if isinstance(results[q[0]], NoScriptError)]
    if missing:
        # Not run where the script was missing: safe to run now.
        again = missing[0][1].registered_client.pipeline(transaction=False)
        for _, script, keys, args in missing:
            again.eval(_text_of(script), len(keys), *keys, *args)
        for (position, *_), result in zip(
            missing, await again.execute(raise_on_error=False), strict=True
        ):
            results[position] = result
    for result in results:
        if isinstance(result, Exception):
            raise result
    return results


async def cluster_view(client: RedisCluster, timeout: float = 1.0) -> dict[str, Any]:
    """The cluster as this node sees it: the shards (masters) and replicas of its slot map,
    which of them answer, and the cluster's own state as one master reports it."""
    primaries, replicas = client.get_primaries(), client.get_replicas()

    async def answers(node: ClusterNode) -> bool:
        try:
            return bool(await asyncio.wait_for(client.ping(target_nodes=node), timeout))
        except (*UNREACHABLE_ERRORS, TimeoutError):
            return False

    up = await asyncio.gather(*(answers(n) for n in [*primaries, *replicas]))
    info: dict[str, Any] = {}
    for node, alive in zip(primaries, up, strict=False):
        if alive:
            with contextlib.suppress(*UNREACHABLE_ERRORS, TimeoutError):
                info = await asyncio.wait_for(client.cluster_info(target_nodes=node), timeout)
                break
    roles = ["master"] * len(primaries) + ["replica"] * len(replicas)
    return {
        "state": str(info.get("cluster_state", "unknown")),
        "slots_ok": int(info.get("cluster_slots_ok", 0)),
        "shards": len(primaries),
        "shards_up": sum(up[: len(primaries)]),
        "replicas": len(replicas),
        "replicas_up": sum(up[len(primaries) :]),
        "nodes": [
            {"address": node.name, "role": role, "up": alive}
            for node, role, alive in zip([*primaries, *replicas], roles, up, strict=True)
        ],
    }


def shard_replicas(client: RedisCluster, key: str) -> int:
    """Replicas of the shard that holds ``key``, in the client's slot map."""
    nodes = client.nodes_manager.slots_cache.get(key_slot(key.encode()), [])
    return max(len(nodes) - 1, 0)


# Failures after which run_script makes the call again the usual way (with redis-py's retries).
_LOST: Final = (RedisConnectionError, RedisTimeoutError, ConnectionResetError)
# What run_script passes on (hiredis packs these; not bytearray or memoryview).
ScriptArg: TypeAlias = str | bytes | int | float


async def run_script(
    client: RedisClient, script: AsyncScript, keys: Sequence[str], args: Sequence[ScriptArg]
) -> Any:
    """``script(keys=keys, args=args)``, for the hot paths (a chat send).

    On one Redis, the call goes straight to a connection: EVALSHA, and EVAL with the text
    where Redis lacks the script (it then keeps it). redis-py's own call adds a third again
    of client CPU per call (its Script object, retry wrapper, per-command bookkeeping and
    reply callbacks, its argument encoding where hiredis packs the command alone); measured
    here ~40 against ~65-70 µs. A client made by ``connect`` has a connection of its own for
    these calls, pipelined (``signaling.script_pipe``: no pool, its health check nor a task
    per call; ~80 against ~35 µs of client CPU per chat send, 20 senders at once), or, once
    a broker started on it, the broker's pub/sub connection (``share_script_calls``);
    another takes a pooled one. A connection that cannot be had or fails is closed and the call made
    again the usual way, with redis-py's retries.
    On a cluster, as the script (the cluster client finds the shard and follows moves)."""
    if is_cluster(client):
        return await script(keys=keys, args=args)
    client = cast(redis.Redis, client)  # is_cluster narrows only where it holds
    pipe: ScriptCalls | None = None
    if isinstance(client, _Redis):
        pipe = client.calls or client.scripts
    if pipe is not None:
        try:
            try:
                # hiredis's stub types the tuple as one item long.
                return await pipe.call(
                    pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))  # type: ignore[arg-type]
                )
            except NoScriptError:
                return await pipe.call(
                    pack_command(("EVAL", script.script, len(keys), *keys, *args))  # type: ignore[arg-type]
                )
        except _LOST:
            return await script(keys=keys, args=args)
    pool = client.connection_pool
    try:
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    except _LOST:
        return await script(keys=keys, args=args)
    try:
        try:
            await conn.send_packed_command(
                # hiredis's stub types the tuple as one item long.
                pack_command(("EVALSHA", script.sha, len(keys), *keys, *args)),  # type: ignore[arg-type]
                False,
            )
            return await conn.read_response()
        except NoScriptError:
            await conn.send_packed_command(
                pack_command(("EVAL", script.script, len(keys), *keys, *args)),  # type: ignore[arg-type]
                False,
            )
            return await conn.read_response()
    except _LOST:
        pass
    finally:
        await pool.release(conn)
    return await script(keys=keys, args=args)


async def run_replicated(
    client: RedisClient,
    script: AsyncScript,
    keys: Sequence[str],
    args: Sequence[ScriptArg],
    wait_ms: int,
) -> Any:
    """Run ``script``; on a cluster whose shard for ``keys[0]`` has a replica, return only once
    a replica has its writes too (``WAIT`` on the same connection, up to ``wait_ms``), else
    raise TimeoutError: a master that dies before its replica has a write takes it along, so
    the caller must not acknowledge it. On one Redis, or with ``wait_ms`` 0, as the script."""
    if not is_cluster(client) or wait_ms <= 0 or not shard_replicas(client, keys[0]):
        return await run_script(client, script, keys, args)
    pipe = client.pipeline(transaction=False)
    # The text, not the digest: a rerun would come after the WAIT below.
    pipe.eval(_text_of(script), len(keys), *keys, *args)
    # To the script's shard: WAIT counts the writes of the connection it is sent on, which
    # the pipeline shares with the script.
    pipe.execute_command("WAIT", 1, wait_ms, target_nodes=client.get_node_from_key(keys[0]))
    reply, acked = await pipe.execute()
    if int(acked) < 1:
        # The replica may be gone for good: once the cluster has failed it, a fresh slot map
        # no longer lists it, and the retry acknowledges on the master alone.
        with contextlib.suppress(RedisError, OSError):
            await client.nodes_manager.initialize()
        raise RedisTimeoutError(f"no replica had the write within {wait_ms} ms")
    return reply

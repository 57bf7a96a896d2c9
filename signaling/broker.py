"""Redis pub/sub for one node: reference-counted channel subscriptions and reconnection.

Sharded pub/sub (``SSUBSCRIBE``/``SPUBLISH``, Redis 7) on one Redis and on a Redis Cluster
alike: a channel carries the hash tag of what it is about (``signaling.keys``), so on a
cluster its messages stay on the shard that owns that conversation, user or room instead of
being broadcast to every shard, and a script may publish on it next to its writes.

A node subscribes only to the channels its connected devices need. On one Redis (without TLS)
the messages are read through a connection of the node's own (``signaling.pubsub_pipe``,
for its lower cost per message; it carries the hot path's script calls too); on a cluster,
or a Redis over TLS, through redis-py's ``PubSub``. When Redis goes away the reader keeps
retrying and every channel is subscribed again on reconnect; on a cluster redis-py also
moves a channel's subscription to the shard that owns its slot after a failover or a slot
migration. A Redis cut off without a word (no FIN, no RST: its host gone, a hung server)
leaves a subscribed connection silent: each connection (the pipe, redis-py's, each shard's)
is asked a ``PING`` after ``pubsub_pipe.IDLE_PING_S`` without a read and dropped if nothing
is read from it within ``pubsub_pipe.REPLY_TIMEOUT_S`` after, and then made anew as one that
closed (on a cluster, a shard that does not answer then is looked up, and its channels follow
its slots to the promoted replica). redis-py's own record of the channels misses those subscribed
or given up while a connection was down, so after each reconnect or move the broker makes
redis-py's subscriptions the ones it wants. Either way messages may have been missed
meanwhile, so the broker tells its ``on_reconnect`` callbacks, which read back what they
need.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterPubSub, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError, ResponseError

from signaling import pubsub_pipe
from signaling.keys import node_channel
from signaling.liveness import Liveness, Verdict
from signaling.pubsub_pipe import PubSubPipe
from signaling.redis_client import (
    UNREACHABLE_ERRORS,
    RedisClient,
    on_topology_change,
    plain_redis,
    share_script_calls,
)
from signaling.tasks import cancel_and_wait

log = logging.getLogger("huddle.broker")

Handler = Callable[[bytes], None]
RETRY_DELAY_S: Final = 0.1
RETRY_DELAY_MAX_S: Final = 2.0
READ_TIMEOUT_S: Final = 1.0
# On a cluster each shard's pub/sub connection has a reader task of its own, blocked on its
# socket (redis-py's own reader takes the shards in turn, each for a slice of its timeout: a
# message on one shard would wait out the others' slices). New connections get their reader
# when the broker subscribes or follows a move, and at least this often.
SHARD_READERS_CHECK_S: Final = 0.5
# What a call on redis-py's pub/sub may raise besides Redis out of reach: of two tasks that
# make one dropped connection anew at once (its reader and a subscribe, after a shard went
# silent), the second to read fails with RuntimeError. It is tried again as after a failure.
PUBSUB_ERRORS: Final = (*UNREACHABLE_ERRORS, RuntimeError)


class Broker:
    """``own_reader=False`` reads one Redis through redis-py as a cluster is read (for
    comparisons; the node keeps the default)."""

    def __init__(self, client: RedisClient, node_id: str, *, own_reader: bool = True) -> None:
        self._redis = client
        where = plain_redis(client) if own_reader else None
        self._pipe: PubSubPipe | None = None
        if where is not None:
            self._pipe = PubSubPipe(where, self._deliver, self._lost, self._restored)
        # Subscription replies are read too: a shard that gives a slot away drops its
        # channels' subscribers with an unasked sunsubscribe, the only sign of the move.
        self._pubsub: PubSub = client.pubsub(ignore_subscribe_messages=False)
        self._handlers: dict[str, list[Handler]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Connections whose reconnects are reported (each registered once).
        self._watched: weakref.WeakSet[object] = weakref.WeakSet()
        # Cluster: the shard each channel was subscribed on, to tell a move from a refresh.
        self._placement: dict[str, str] = {}
        # Cluster: a reader per shard connection (by node name), and the shards whose
        # connection failed last.
        self._shard_readers: dict[str, asyncio.Task[None]] = {}
        self._failing: set[str] = set()
        # Cluster: what each shard's reader read (counted per message), looked at by ``_read``
        # (a reader of its own per shard, whose entry is replaced when the shard has a new
        # reader).
        self._liveness: dict[str, Liveness] = {}
        # redis-py path: a subscribe or unsubscribe that could not be sent, so redis-py's
        # channels differ from the wanted ones until ``_match_subscriptions`` ran.
        self._out_of_step = False
        # Cluster: the task that matches the subscriptions after a reconnect, and whether
        # it should run again.
        self._resyncer: asyncio.Task[None] | None = None
        self._resync_again = False
        # When the reader may try matching again after a failed try, and the wait after the
        # next failure (on a cluster a try holds redis-py's lock on its shard state).
        self._resync_at = 0.0
        self._resync_delay = RETRY_DELAY_S
        self.node_channel = node_channel(node_id)
        self.connected = False
        self.reconnects = 0
        # Called after the connection came back (subscriptions restored): messages published
        # while it was down are gone, so their owners re-read what they need.
        self.on_reconnect: list[Callable[[], None]] = []

    async def start(self) -> None:
        # The node's own channel keeps the pub/sub connection subscribed to at least one
        # channel, which redis-py needs before it will read.
        try:
            if self._pipe is not None:
                await self._pipe.start([self.node_channel.encode()])
                self.connected = True
                # The client's script calls share the connection: a chat send's reply and
                # its message to this node come in one read.
                share_script_calls(self._redis, self._pipe)
                return
            await self._pubsub.ssubscribe(self.node_channel)
        except ResponseError as exc:
            if "unknown command" in str(exc).lower():
                raise RuntimeError(
                    "Huddle needs Redis 7 or later (sharded pub/sub: SSUBSCRIBE)"
                ) from exc
            raise
        self.connected = True
        if isinstance(self._redis, RedisCluster):
            on_topology_change(self._redis, self._topology_changed)
        self._placement[self.node_channel] = self._shard_of(self.node_channel)
        self._watch_connections()
        self._reader = asyncio.create_task(self._read(), name="broker-reader")

    async def stop(self) -> None:
        readers = [self._reader] if self._reader is not None else []
        await cancel_and_wait(
            [*readers, *self._tasks, *self._shard_readers.values()], "pub/sub broker"
        )
        if self._pipe is not None:
            share_script_calls(self._redis, None)
            await self._pipe.aclose()
        with contextlib.suppress(*UNREACHABLE_ERRORS):
            await self._pubsub.aclose()

    async def subscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.setdefault(channel, [])
        handlers.append(handler)
        if len(handlers) == 1 and self._pipe is not None:
            try:
                await self._pipe.subscribe(channel.encode())
            except UNREACHABLE_ERRORS as exc:
                # Still wanted: the next connection subscribes it.
                log.warning(
                    "subscribe deferred until Redis is back",
                    extra={"channel": channel, "error": repr(exc)},
                )
        elif len(handlers) == 1:
            try:
                self._check_up(channel)
                await self._pubsub.ssubscribe(channel)
            except PUBSUB_ERRORS as exc:
                # redis-py forgets a subscribe it could not send: the broker sends it again
                # once the connection is back.
                self._out_of_step = True
                log.warning(
                    "subscribe deferred until Redis is back",
                    extra={"channel": channel, "error": repr(exc)},
                )
            self._placement[channel] = self._shard_of(channel)
            self._watch_connections()
            self._start_shard_readers()

    async def unsubscribe(self, channel: str, handler: Handler) -> None:
        handlers = self._handlers.get(channel)
        if not handlers or handler not in handlers:
            return
        handlers.remove(handler)
        if not handlers:
            del self._handlers[channel]
            if self._pipe is not None:
                await self._pipe.unsubscribe(channel.encode())
                return
            self._placement.pop(channel, None)
            try:
                self._check_up(channel)
                await self._pubsub.sunsubscribe(channel)
            except PUBSUB_ERRORS:
                # redis-py subscribes it again on reconnect: the broker gives it up then.
                self._out_of_step = True

    @property
    def channel_count(self) -> int:
        return len(self._handlers)

    async def publish(self, channel: str, payload: bytes) -> None:
        await self._redis.spublish(channel, payload)

    # --- reconnects and moves -------------------------------------------------------------

    def _pubsubs(self) -> list[PubSub]:
        if isinstance(self._pubsub, ClusterPubSub):
            return list(self._pubsub.node_pubsub_mapping.values())
        return [self._pubsub]

    def _watch_connections(self) -> None:
        # Registered after redis-py's own callback, so when ours runs the channels are
        # subscribed again. redis-py reconnects inside a read without raising: after a Redis
        # that restarted quickly, this callback is the only sign of it.
        for pubsub in self._pubsubs():
            connection = pubsub.connection
            if connection is not None and connection not in self._watched:
                self._watched.add(connection)
                connection.register_connect_callback(self._on_connect)

    def _shard_of(self, channel: str) -> str:
        if not isinstance(self._redis, RedisCluster):
            return ""
        try:
            node = self._redis.get_node_from_key(channel)
        except RedisError:
            return ""
        return "" if node is None else str(node.name)

    def _dropped(self, channel: str) -> None:
        """The shard dropped a channel still wanted: its slot moved. A keyed command for the
        slot meets the redirect, which makes redis-py refresh its map and tell
        ``_topology_changed``."""
        if not isinstance(self._redis, RedisCluster):
            return
        log.info("shard dropped a subscription", extra={"channel": channel})
        task = asyncio.create_task(self._probe(channel), name="broker-probe")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe(self, channel: str) -> None:
        # RedisClusterException: no node of the cluster answers (not a RedisError).
        with contextlib.suppress(RedisError, RedisClusterException, OSError):
            # The channel's own name as a key: the same slot; it holds no data.
            await self._redis.exists(channel)

    async def _topology_changed(self) -> None:
        # Runs inside redis-py's refresh of its slot map: the work goes to a task of its own.
        task = asyncio.create_task(self._follow_topology(), name="broker-topology")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow_topology(self) -> None:
        if not isinstance(self._pubsub, ClusterPubSub):
            return
        moved = [c for c, shard in self._placement.items() if self._shard_of(c) != shard]
        if not moved:
            return
        try:
            # redis-py moves the subscriptions too; waiting for it here means the callbacks
            # below read back only once every channel listens on its new shard.
            await self._pubsub.reinitialize_shard_subscriptions()
        except PUBSUB_ERRORS as exc:
            # Slots still uncovered mid-failover: the next refresh of the map tries again.
            log.warning("pub/sub not moved yet", extra={"error": str(exc)})
            return
        for channel in moved:
            if channel in self._placement:
                self._placement[channel] = self._shard_of(channel)
        self._watch_connections()
        self._start_shard_readers()
        log.info("pub/sub channels moved to other shards", extra={"channels": len(moved)})
        await self._resync()

    async def _on_connect(self, connection: object) -> None:
        if isinstance(self._pubsub, ClusterPubSub):
            # Called inside redis-py's connect, which may hold the cluster pub/sub's locks
            # that subscribing takes: matched from a task of its own.
            self._resync_soon()
        else:
            await self._resync()

    # --- redis-py's subscriptions made the wanted ones --------------------------------------

    def _held(self) -> set[str]:
        """The channels redis-py subscribes now, and again on each reconnect."""
        held: set[str] = set()
        for pubsub in self._pubsubs():
            leaving = pubsub.pending_unsubscribe_shard_channels
            for channel in pubsub.shard_channels:
                if channel not in leaving:
                    held.add(channel.decode() if isinstance(channel, bytes) else str(channel))
        return held

    def _down(self, channel: str) -> bool:
        """Whether the connection ``channel``'s subscription goes through was dropped, and
        its reader makes it anew: redis-py's connection takes one connect at a time (of two
        at once, one fails and may leave its socket open), so a subscribe waits for it."""
        if isinstance(self._pubsub, ClusterPubSub):
            own = self._pubsub.node_pubsub_mapping.get(self._shard_of(channel))
        else:
            own = self._pubsub
        connection = None if own is None else own.connection
        return connection is not None and not connection.is_connected

    def _check_up(self, channel: str) -> None:
        if self._down(channel):
            raise RedisConnectionError("pub/sub connection being made anew")

    async def _match_subscriptions(self) -> bool:
        """Subscribe the wanted channels redis-py lacks and give up those it holds that no
        one wants: it forgets a subscribe it could not send, and subscribes again on
        reconnect a channel whose unsubscribe it could not send. False if Redis could not
        be reached (tried again later)."""
        held = self._held()
        wanted = {self.node_channel, *self._handlers}
        # Cleared first: a subscribe or unsubscribe that fails meanwhile sets it again.
        self._out_of_step = False
        # Channels left for later, their connection being made anew (``_check_up``).
        waiting: list[str] = []
        try:
            for channel in sorted(wanted - held):
                if channel == self.node_channel or channel in self._handlers:
                    if self._down(channel):
                        waiting.append(channel)
                        continue
                    await self._pubsub.ssubscribe(channel)
                    self._placement[channel] = self._shard_of(channel)
            for channel in sorted(held - wanted):
                if channel not in self._handlers:
                    if self._down(channel):
                        waiting.append(channel)
                        continue
                    await self._pubsub.sunsubscribe(channel)
            if waiting:
                raise RedisConnectionError(f"{len(waiting)} channels' connection down")
        except PUBSUB_ERRORS as exc:
            self._out_of_step = True
            self._resync_at = time.monotonic() + self._resync_delay
            self._resync_delay = min(self._resync_delay * 2, RETRY_DELAY_MAX_S)
            log.warning("pub/sub channels not matched yet", extra={"error": repr(exc)})
            return False
        finally:
            self._watch_connections()
            self._start_shard_readers()
        if wanted != held:
            log.info(
                "pub/sub channels matched",
                extra={"subscribed": len(wanted - held), "given_up": len(held - wanted)},
            )
        self._resync_delay = RETRY_DELAY_S
        return True

    async def _resync(self) -> None:
        if await self._match_subscriptions():
            self._restored()

    def _resync_soon(self) -> None:
        self._resync_again = True
        if self._resyncer is None or self._resyncer.done():
            self._resyncer = asyncio.create_task(self._resync_loop(), name="broker-resync")
            self._tasks.add(self._resyncer)
            self._resyncer.add_done_callback(self._tasks.discard)

    async def _resync_loop(self) -> None:
        while self._resync_again:
            self._resync_again = False
            await self._resync()

    def _lost(self, reason: str) -> None:
        if self.connected:
            log.warning("pub/sub connection lost", extra={"error": reason})
        self.connected = False

    def _deliver(self, channel: bytes, data: bytes) -> None:
        """A message read by the pipe (from its protocol's ``data_received``)."""
        name = channel.decode()
        handlers = self._handlers.get(name)
        if not handlers:
            return
        for handler in tuple(handlers):
            try:
                handler(data)
            except Exception:
                log.exception("pub/sub handler failed", extra={"channel": name})

    def _restored(self) -> None:
        self.connected = True
        self.reconnects += 1
        log.info("pub/sub connection restored")
        for callback in self.on_reconnect:
            try:
                callback()
            except Exception:
                log.exception("reconnect callback failed")

    async def _read(self) -> None:
        if isinstance(self._pubsub, ClusterPubSub):
            while True:
                self._start_shard_readers()
                self._look_at_shards()
                if self._out_of_step and time.monotonic() >= self._resync_at:
                    # No reconnect may come to send it (the shard of a channel subscribed
                    # while it was away had no connection of the broker's yet).
                    self._resync_soon()
                await asyncio.sleep(SHARD_READERS_CHECK_S)
        delay = RETRY_DELAY_S
        liveness = Liveness(time.monotonic())
        while True:
            try:
                message = await self._pubsub.get_message(timeout=READ_TIMEOUT_S)
                if message is not None:
                    liveness.reads += 1
                elif verdict := liveness.look(
                    time.monotonic(), pubsub_pipe.IDLE_PING_S, pubsub_pipe.REPLY_TIMEOUT_S
                ):
                    await self._keep_alive(self._pubsub, verdict, "")
                    if verdict is Verdict.LOST:
                        liveness.restart(time.monotonic())
                    continue
            except PUBSUB_ERRORS as exc:
                if self.connected:
                    log.warning("pub/sub connection lost", extra={"error": str(exc)})
                self.connected = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_MAX_S)
                continue
            if not self.connected or (self._out_of_step and time.monotonic() >= self._resync_at):
                await self._resync()
            delay = RETRY_DELAY_S
            self._dispatch(message)

    def _start_shard_readers(self) -> None:
        if not isinstance(self._pubsub, ClusterPubSub):
            return
        for name in list(self._pubsub.node_pubsub_mapping):
            reader = self._shard_readers.get(name)
            if reader is None or reader.done():
                self._shard_readers[name] = asyncio.create_task(
                    self._read_shard(self._pubsub, name), name=f"broker-reader-{name}"
                )

    async def _read_shard(self, pubsub: ClusterPubSub, name: str) -> None:
        """Read one shard's pub/sub connection until redis-py retires it (its channels moved
        to other shards) or the shard leaves the cluster."""
        delay = RETRY_DELAY_S
        liveness = self._liveness[name] = Liveness(time.monotonic())
        while True:
            own = pubsub.node_pubsub_mapping.get(name)
            cluster = self._redis
            node = cluster.get_node(node_name=name) if isinstance(cluster, RedisCluster) else None
            if own is None or node is None:
                self._failing.discard(name)
                self.connected = not self._failing
                return
            if own.connection is None:
                # Not connected yet (its first subscribe is under way), or being closed.
                await asyncio.sleep(RETRY_DELAY_S)
                continue
            try:
                # No timeout: the read waits on this shard's socket alone, without holding
                # the connection's lock, so subscribing meanwhile is not held up.
                message = await pubsub.get_sharded_message(target_node=node, timeout=None)
                liveness.reads += 1
            except PUBSUB_ERRORS as exc:
                if name not in self._failing:
                    log.warning("shard pub/sub lost", extra={"shard": name, "error": str(exc)})
                self._shard_failing(name, True)
                self.connected = False
                # The shard may be gone for good: a command for one of its channels meets
                # the failure, and redis-py looks for a new owner of the slots.
                self._probe_shard(name)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_DELAY_MAX_S)
                continue
            if name in self._failing:
                self._shard_failing(name, False)
                self.connected = not self._failing
            delay = RETRY_DELAY_S
            self._dispatch(message)

    def _shard_failing(self, name: str, failing: bool) -> None:
        """Note whether a shard's connection failed, for redis-py too: its cluster pub/sub
        skips the unsubscribe on a node its own reader found unreachable when it moves the
        node's channels to their new shard (best effort, as its reader's note is). Without
        it, that unsubscribe connects the node's connection again while the broker's reader
        does (one of the two sockets left open), and waits out a silent node's timeout."""
        unreachable = getattr(self._pubsub, "_unreachable_nodes", None)
        if failing:
            self._failing.add(name)
            if isinstance(unreachable, set):
                unreachable.add(name)
        else:
            self._failing.discard(name)
            if isinstance(unreachable, set):
                unreachable.discard(name)

    def _look_at_shards(self) -> None:
        """Ask each shard connection silent for ``IDLE_PING_S`` a PING, and drop one that
        read nothing ``REPLY_TIMEOUT_S`` after (``signaling.liveness``)."""
        if not isinstance(self._pubsub, ClusterPubSub):
            return
        now = time.monotonic()
        for name, liveness in list(self._liveness.items()):
            reader = self._shard_readers.get(name)
            if reader is None or reader.done():
                del self._liveness[name]  # the shard was retired
                continue
            own = self._pubsub.node_pubsub_mapping.get(name)
            connection = None if own is None else own.connection
            if name in self._failing or connection is None or not connection.is_connected:
                # Down or being made anew: its reader finds out; a read starts the count again.
                liveness.restart(now)
                continue
            verdict = liveness.look(now, pubsub_pipe.IDLE_PING_S, pubsub_pipe.REPLY_TIMEOUT_S)
            if verdict is not None and own is not None:
                task = asyncio.create_task(
                    self._keep_alive(own, verdict, name), name="broker-keep-alive"
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _keep_alive(self, pubsub: PubSub, verdict: Verdict, shard: str) -> None:
        """Ask ``pubsub``'s connection a PING (its reply is read as a ``pong`` message, which
        no handler sees), or drop it: its reader then makes it anew and subscribes its
        channels again (on a cluster, a shard that does not come back is probed, and its
        channels follow its slots to their new master)."""
        if verdict is Verdict.PING:
            with contextlib.suppress(*PUBSUB_ERRORS):
                await pubsub.ping()
            return
        log.warning(
            "pub/sub connection silent: dropped",
            extra={"shard": shard, "timeout_s": pubsub_pipe.REPLY_TIMEOUT_S},
        )
        self.connected = False
        connection = pubsub.connection
        if connection is not None:
            # Not waiting for the close: a peer that reads nothing may never complete it.
            with contextlib.suppress(*PUBSUB_ERRORS):
                await connection.disconnect(nowait=True)
        if shard:
            self._shard_failing(shard, True)
            # At once rather than after the reader's own try to reconnect, which a silent
            # node holds up for the socket timeout.
            self._probe_shard(shard)

    def _probe_shard(self, name: str) -> None:
        channel = next((c for c, shard in self._placement.items() if shard == name), None)
        if channel is not None:
            task = asyncio.create_task(self._probe(channel), name="broker-probe")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _dispatch(self, message: dict[str, Any] | None) -> None:
        if message is None:
            return
        channel = message["channel"]
        name = channel.decode() if isinstance(channel, bytes) else str(channel)
        kind = message.get("type")
        if kind == "sunsubscribe" and name in self._handlers:
            self._dropped(name)
        if kind != "smessage":
            return
        for handler in list(self._handlers.get(name, ())):
            try:
                handler(message["data"])
            except Exception:
                log.exception("pub/sub handler failed", extra={"channel": name})

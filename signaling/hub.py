"""Node-wide state: the local sessions, what they watch, and the node's periodic duties."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Literal

import msgspec
from redis.asyncio.cluster import RedisCluster

from calls.config import CallsConfig
from calls.manager import CallManager
from calls.relay import Relay
from calls.ring_script import user_call_channel
from calls.ringing import Ringing
from chat.config import ChatConfig
from chat.service import ChatService
from huddle.config import Settings
from signaling import protocol as p
from signaling.broker import Broker
from signaling.flush_round import FlushRound
from signaling.keys import user_key
from signaling.metrics import Metrics
from signaling.presence import DeviceEntry, PresenceStore, decode_snapshot, presence_channel
from signaling.redis_client import UNREACHABLE_ERRORS, RedisClient, cluster_view
from signaling.session import Session

log = logging.getLogger("huddle.hub")
SHUTDOWN_CLOSE_TIMEOUT_S: Final = 5.0
Job = Callable[[], Awaitable[None]]


class Control(msgspec.Struct, kw_only=True):
    """Messages between nodes about one user's devices."""

    kind: Literal["replace"]
    user: str
    device: str
    session: str


_control_decoder: Final = msgspec.json.Decoder(Control)


def control_channel(user: str) -> str:
    return user_key(user, "control")


class Hub:
    def __init__(
        self,
        settings: Settings,
        client: RedisClient,
        broker: Broker,
        metrics: Metrics,
        api_keys: dict[str, str],
        chat: ChatConfig,
        calls: CallsConfig,
    ) -> None:
        self.settings = settings
        self.redis = client
        self.broker = broker
        self.metrics = metrics
        self.api_keys = api_keys
        self.presence = PresenceStore(client, settings.node_id, settings.presence_ttl_s)
        self.relay = Relay(settings.node_id, broker.publish)
        self.calls = CallManager(calls, client, self.relay)
        self.ringing = Ringing(calls, client, lambda user: self.by_user.get(user, ()))
        self.chat = ChatService(chat, client, broker, self.spawn)
        self.ringing.on_record = self.chat.record_call
        self.calls.conversations.may_call = self.chat.may_call
        self.calls.conversations.on_record = self.chat.record_group_call
        metrics.add_collector(self.calls.collect_metrics)
        self.sessions: set[Session] = set()
        # The sessions' writes of one round of the event loop, done together after it.
        self.flush_round = FlushRound()
        self.by_user: dict[str, set[Session]] = {}
        self.watchers: dict[str, set[Session]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Future[None]] = set()
        self._presence_versions: dict[str, int] = {}  # last version fanned out, per user
        broker.on_reconnect.append(lambda: self.spawn(self._resync_presence()))
        self.started = time.monotonic()

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self.settings.presence_refresh_s, self._refresh)),
            asyncio.create_task(self._every(self.settings.presence_sweep_s, self._sweep)),
            asyncio.create_task(self._every(self.settings.ring_sweep_s, self.ringing.sweep)),
        ]

    def spawn(self, job: Awaitable[None]) -> None:
        """Run ``job`` in the background, keeping a reference until it ends."""
        future = asyncio.ensure_future(job)
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.calls.close()
        self.ringing.close()
        sessions = list(self.sessions)
        if sessions:
            await asyncio.wait(
                [
                    asyncio.ensure_future(s.close(p.CloseCode.GOING_AWAY, "server shutdown"))
                    for s in sessions
                ],
                timeout=SHUTDOWN_CLOSE_TIMEOUT_S,
            )

    async def _every(self, interval: float, job: Job) -> None:
        task = asyncio.current_task()
        # Python 3.11's wait_for (redis-py sends commands through it) swallows a cancellation
        # that lands as the command completes: stop() would then wait for this loop forever.
        while task is None or not task.cancelling():
            await asyncio.sleep(interval)
            try:
                await job()
            except UNREACHABLE_ERRORS as exc:
                log.warning("periodic job failed", extra={"job": job.__name__, "error": str(exc)})
            except Exception:
                log.exception("periodic job crashed", extra={"job": job.__name__})

    async def _refresh(self) -> None:
        await self.presence.refresh(self.entry(s) for s in self.sessions if s.claims)
        await self.calls.refresh_claims()
        await self.calls.check_remote()
        await self.ringing.refresh()

    async def _sweep(self) -> None:
        expired = await self.presence.sweep()
        if expired:
            log.info("expired stale devices", extra={"count": expired})

    # --- sessions -----------------------------------------------------------------------

    def entry(self, session: Session) -> DeviceEntry:
        return DeviceEntry(
            user=session.identity, device=session.device, session=session.id, status=session.status
        )

    def connected(self, session: Session) -> None:
        self.sessions.add(session)
        self.metrics.connections.inc()

    async def register(self, session: Session) -> None:
        """An authenticated device: route its user's control messages, publish presence."""
        user = session.identity
        local = self.by_user.setdefault(user, set())
        local.add(session)
        if len(local) == 1:
            await self.broker.subscribe(control_channel(user), self._on_control)
            await self.broker.subscribe(user_call_channel(user), self.ringing.on_message)
        try:
            await self.broker.publish(
                control_channel(user),
                msgspec.json.encode(
                    Control(kind="replace", user=user, device=session.device, session=session.id)
                ),
            )
            await self.presence.set(self.entry(session))
        except BaseException:
            await self._forget_user_session(session)
            raise
        self.metrics.authenticated.inc()

    async def disconnected(self, session: Session) -> None:
        session.dispose()
        self.sessions.discard(session)
        self.metrics.connections.dec()
        await self.unwatch(session, set(session.watching))
        self.chat.router.forget(session)
        if session.claims is None:
            return
        await self.calls.session_gone(session)
        await self.ringing.session_gone(session)
        self.metrics.authenticated.dec()
        await self._forget_user_session(session)
        try:
            await self.presence.remove(self.entry(session))
        except UNREACHABLE_ERRORS as exc:
            # The entry expires on its own when nobody refreshes it.
            log.warning("presence removal deferred to expiry", extra={"error": str(exc)})

    async def _forget_user_session(self, session: Session) -> None:
        user = session.identity
        local = self.by_user.get(user)
        if local is None:
            return
        local.discard(session)
        if not local:
            del self.by_user[user]
            await self.broker.unsubscribe(control_channel(user), self._on_control)
            await self.broker.unsubscribe(user_call_channel(user), self.ringing.on_message)

    def _on_control(self, payload: bytes) -> None:
        try:
            msg = _control_decoder.decode(payload)
        except msgspec.DecodeError:
            log.warning("malformed control message")
            return
        for s in list(self.by_user.get(msg.user, ())):
            if s.device == msg.device and s.id != msg.session:
                s.close_soon(p.CloseCode.REPLACED, "device connected again elsewhere")

    # --- presence watching --------------------------------------------------------------

    async def watch(self, session: Session, users: Iterable[str]) -> None:
        for user in users:
            watchers = self.watchers.setdefault(user, set())
            watchers.add(session)
            session.watching.add(user)
            if len(watchers) == 1:
                await self.broker.subscribe(presence_channel(user), self._on_presence)

    async def unwatch(self, session: Session, users: Iterable[str]) -> None:
        for user in users:
            session.watching.discard(user)
            watchers = self.watchers.get(user)
            if watchers is None:
                continue
            watchers.discard(session)
            if not watchers:
                del self.watchers[user]
                self._presence_versions.pop(user, None)
                await self.broker.unsubscribe(presence_channel(user), self._on_presence)

    def _on_presence(self, payload: bytes) -> None:
        self._fan_out_presence(decode_snapshot(payload))

    def _fan_out_presence(self, snapshot: p.UserPresence) -> None:
        watchers = self.watchers.get(snapshot.user)
        if not watchers:
            return
        if snapshot.version == self._presence_versions.get(snapshot.user):
            return  # already delivered (a re-read after a reconnect found no change)
        self._presence_versions[snapshot.user] = snapshot.version
        event = p.EncodedEvent(p.PresenceUpdate(seq=0, presence=snapshot))
        for session in watchers:
            session.send_event(event)

    async def _resync_presence(self) -> None:
        """After pub/sub was down: changes published meanwhile were lost; re-read them."""
        users = list(self.watchers)
        if not users:
            return
        try:
            snapshots = await self.presence.get(users)
        except UNREACHABLE_ERRORS as exc:
            log.warning("presence re-sync failed", extra={"error": str(exc)})
            return
        for snapshot in snapshots:
            self._fan_out_presence(snapshot)

    # --- health -------------------------------------------------------------------------

    async def cluster_view(self) -> dict[str, Any] | None:
        """The Redis Cluster as this node sees it (``signaling.redis_client.cluster_view``);
        None on one Redis."""
        if not isinstance(self.redis, RedisCluster):
            return None
        return await cluster_view(self.redis)

    async def redis_ok(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), timeout=1.0))
        except (*UNREACHABLE_ERRORS, TimeoutError):
            return False

"""Group calls on this node: sessions joined to SFU rooms, and the rooms' events to them.

Rooms live in SFU worker processes (``sfu.pool``; one per core by default), each worker
owning whole rooms; a new room goes to the least loaded worker. With ``sfu_workers = 0``
they live in the node's own process instead. The node keeps who is in which room and relays
signaling to the room's host. A worker that dies is restarted and the participants of its
rooms get ``call.reconnect`` (the client joins again by itself).

A room lives on exactly one node: the node that opens it claims ``huddle:{room:NAME}:node``
in Redis (``NODE#WORKER``, refreshed while the room lives). A device on another node joins
it all the same: its node relays its call requests to the owner (``calls.relay``), and its
media goes straight to the owner's SFU.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol

import msgspec
import redis.asyncio as redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from redis.exceptions import RedisError

from calls.relay import Relay, RelayError, RelayRequest, RemoteEndpoint
from huddle.config import Settings
from sfu import ipc
from sfu.aiortc_glue import (
    check_version,
    install_fast_paths,
    server_rtc_configuration,
    use_host_addresses,
    use_port_range,
)
from sfu.host import LocalHost, RoomHost, TrackRow
from sfu.ice_servers import ice_servers
from sfu.pool import WorkerHost, WorkerPool
from sfu.room import RoomPolicy, SfuError
from sfu.worker import WorkerConfig
from signaling import protocol as p
from signaling.keys import resume_key, room_key

if TYPE_CHECKING:
    from signaling.auth import Claims


class Session(Protocol):
    """A device taking part in calls: a local ``signaling.session.Session`` or a device of
    another node (``calls.relay.RemoteEndpoint``)."""

    device: str
    claims: Claims | None

    @property
    def identity(self) -> str: ...

    def send_event(self, event: p.EncodedEvent) -> None: ...


class _Elsewhere(Exception):
    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner


log = logging.getLogger("huddle.calls")
ROOM_CLAIM_TTL_S: Final = 60

_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def room_node_key(room: str) -> str:
    return room_key(room, "node")


class CallError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(eq=False)
class Member:
    session: Session | None  # None while detached: the device's socket dropped
    room: CallRoom
    participant: str
    identity: str
    name: str
    device: str = ""
    audio_muted: bool = False
    video_muted: bool = False
    screen_sharing: bool = False
    paused: set[str] = dataclasses.field(default_factory=set)  # kinds an admin muted
    held: list[p.Event] = dataclasses.field(default_factory=list)  # events while detached
    expiry: asyncio.TimerHandle | None = None

    def send(self, event: p.Event, encoded: p.EncodedEvent | None = None) -> None:
        if self.session is None:
            if isinstance(event, p.SfuOffer):  # a newer offer replaces an unanswered one
                self.held = [e for e in self.held if not isinstance(e, p.SfuOffer)]
            self.held.append(event)
            return
        self.session.send_event(encoded or p.EncodedEvent(event))

    def info(self) -> p.ParticipantInfo:
        return p.ParticipantInfo(
            participant=self.participant, identity=self.identity, name=self.name,
            audio_muted=self.audio_muted, video_muted=self.video_muted,
            screen_sharing=self.screen_sharing,
        )  # fmt: skip


@dataclasses.dataclass(eq=False)
class CallRoom:
    name: str
    host: RoomHost
    claim: str
    members: dict[str, Member] = dataclasses.field(default_factory=dict)


# Relayed request kinds that carry a call request of their own: the method serving it here.
_RELAYED: Final[dict[str, tuple[str, type[p.Request]]]] = {
    "publish": ("publish", p.SfuPublish),
    "track_settings": ("track_settings", p.SfuTrackSettings),
    "answer": ("answer", p.SfuAnswer),
    "candidate": ("add_candidate", p.SfuCandidate),
    "pin": ("pin", p.CallPin),
    "restart": ("restart", p.SfuRestart),
    "state": ("set_state", p.CallState),
    "mute": ("mute", p.CallMute),
    "remove": ("remove", p.CallRemove),
}


class CallManager:
    def __init__(self, settings: Settings, client: redis.Redis, relay: Relay | None = None) -> None:
        check_version()
        install_fast_paths()
        if settings.ice_addresses:
            use_host_addresses(settings.ice_addresses)
        if settings.ice_port_min:
            use_port_range(settings.ice_port_min, settings.ice_port_max)
        self.settings = settings
        self._redis = client
        self._release = client.register_script(_RELEASE)
        self.rooms: dict[str, CallRoom] = {}
        self.members: dict[Session, Member] = {}
        self._by_participant: dict[str, Member] = {}
        self._detached: dict[tuple[str, str], Member] = {}
        # Local sessions in rooms owned by other nodes: session -> (room, owner node).
        self._relayed: dict[Session, tuple[str, str]] = {}
        self._relayed_ids: dict[str, Session] = {}
        self.relay = relay
        if relay is not None:
            relay.serve = self._serve_relayed
            relay.deliver = self._deliver_relayed
        self._closers: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Future[None]] = set()
        self._opening: dict[str, asyncio.Future[CallRoom]] = {}
        policy = RoomPolicy(
            capacity=settings.room_capacity,
            select_above=settings.selective_forwarding_above,
            audio_max=settings.audio_streams_max,
            video_last_n=settings.video_last_n,
        )
        self.local: LocalHost | None = None
        self.pool: WorkerPool | None = None
        workers = settings.sfu_workers if settings.sfu_workers >= 0 else (os.cpu_count() or 1)
        if workers == 0:
            self.local = LocalHost(
                rtc_config=server_rtc_configuration(), policy=policy,
                on_offer=self._send_offer, on_speakers=self._send_speakers,
                announced=settings.ice_announced, on_layers=self._send_layers,
            )  # fmt: skip
        else:
            config = WorkerConfig(
                index=0, ice_addresses=list(settings.ice_addresses),
                policy=dataclasses.asdict(policy), announced=settings.ice_announced,
                port_min=settings.ice_port_min, port_max=settings.ice_port_max,
                log_level=settings.log_level,
            )  # fmt: skip
            self.pool = WorkerPool(workers, config, on_event=self._worker_event,
                                   on_lost=self._worker_lost)  # fmt: skip

    async def start(self) -> None:
        if self.pool is not None:
            await self.pool.start()

    # --- membership ---------------------------------------------------------------------

    async def join(self, session: Session, room_name: str) -> p.CallJoinOk:
        claims = session.claims
        assert claims is not None
        if not claims.grants.may_join(room_name):
            raise CallError(p.ErrorCode.FORBIDDEN, f"this token may not join {room_name!r}")
        if session in self.members or session in self._relayed:
            current = self.members[session].room.name if session in self.members else (
                self._relayed[session][0])  # fmt: skip
            raise CallError(p.ErrorCode.ALREADY_IN_CALL, f"already in room {current!r}")
        try:
            return await self._join_here(session, room_name, claims)
        except _Elsewhere as elsewhere:
            if self.relay is None or isinstance(session, RemoteEndpoint):
                message = f"room {room_name!r} is open on another node"
                raise CallError(p.ErrorCode.ROOM_ELSEWHERE, message) from None
            return await self._join_there(session, room_name, elsewhere.owner)

    async def _join_there(self, session: Session, room_name: str, owner: str) -> p.CallJoinOk:
        session_id = getattr(session, "id", "")
        self._relayed[session] = (room_name, owner)
        self._relayed_ids[session_id] = session
        try:
            value = await self._relay_call(session, "join")
        except CallError:
            self._relayed.pop(session, None)
            self._relayed_ids.pop(session_id, None)
            raise
        return msgspec.convert(value, p.CallJoinOk)

    async def _relay_call(
        self,
        session: Session,
        kind: Any,
        *,
        args: dict[str, Any] | None = None,
    ) -> Any:
        assert self.relay is not None and session.claims is not None
        room_name, owner = self._relayed[session]
        try:
            return await self.relay.request(
                owner, kind, session_id=getattr(session, "id", ""), room=room_name,
                claims=session.claims, device=session.device, args=args,
            )  # fmt: skip
        except RelayError as exc:
            raise CallError(exc.code, exc.message) from None

    async def _serve_relayed(self, request: RelayRequest, endpoint: RemoteEndpoint) -> Any:
        """A request relayed from a device on another node, for a room of this node."""
        kind = request.kind
        if kind == "join":
            return msgspec.to_builtins(await self.join(endpoint, request.room))
        if kind == "stats":
            return msgspec.to_builtins(await self.stats(endpoint, request.room))
        if kind == "leave":
            await self.leave(endpoint, request.room)
            return None
        if kind == "resume":
            return self.attach(endpoint)
        if kind == "gone":
            await self.session_gone(endpoint)
            return None
        method, message = _RELAYED[kind]
        return await getattr(self, method)(endpoint, msgspec.convert(request.args, message))

    def _deliver_relayed(self, session_id: str, event: p.Event) -> None:
        session = self._relayed_ids.get(session_id)
        if session is not None:
            session.send_event(p.EncodedEvent(event))

    async def _join_here(self, session: Session, room_name: str, claims: Claims) -> p.CallJoinOk:
        room = await self._open(room_name)
        closer = self._closers.pop(room_name, None)
        if closer is not None:
            closer.cancel()
        try:
            participant = await room.host.join(
                room_name, claims.identity, claims.name,
                can_publish=claims.grants.can_publish, can_subscribe=claims.grants.can_subscribe,
            )  # fmt: skip
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            self._close_if_empty(room)
            raise _call_error(exc) from None
        member = Member(
            session=session, room=room, participant=participant,
            identity=claims.identity, name=claims.name, device=session.device,
        )  # fmt: skip
        others = [m.info() for m in room.members.values()]
        room.members[participant] = member
        self.members[session] = member
        self._by_participant[participant] = member
        joined = p.CallParticipantJoined(seq=0, room=room_name, participant=member.info())
        self._broadcast(room, joined, skip=member)
        return p.CallJoinOk(
            re="",
            room=room_name,
            participant=participant,
            participants=others,
            ice_servers=ice_servers(
                stun_urls=self.settings.stun_urls,
                turn_urls=self.settings.turn_urls,
                turn_secret=(
                    self.settings.turn_secret.get_secret_value()
                    if self.settings.turn_secret
                    else None
                ),
                identity=claims.identity,
                now=int(time.time()),
                ttl_s=self.settings.turn_ttl_s,
            ),
        )

    async def _open(self, name: str) -> CallRoom:
        room = self.rooms.get(name)
        if room is not None:
            return room
        opening = self._opening.get(name)
        if opening is not None:  # another join is opening it right now
            return await asyncio.shield(opening)
        future: asyncio.Future[CallRoom] = asyncio.get_running_loop().create_future()
        self._opening[name] = future
        try:
            host: RoomHost
            if self.pool is not None:
                try:
                    worker = self.pool.least_loaded()
                except ipc.ChannelClosed as exc:
                    raise _call_error(exc) from None
                host, claim = worker, f"{self.settings.node_id}#{worker.index}"
            else:
                assert self.local is not None
                host, claim = self.local, f"{self.settings.node_id}#0"
            await self._claim(name, claim)
            room = self.rooms[name] = CallRoom(name=name, host=host, claim=claim)
            future.set_result(room)
            return room
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: joins waiting on it get it through shield
            raise
        finally:
            del self._opening[name]

    async def leave(self, session: Session, room_name: str | None = None) -> None:
        relayed = self._relayed.get(session)
        if relayed is not None and (room_name is None or relayed[0] == room_name):
            try:
                await self._relay_call(session, "leave")
            finally:
                self._drop_relayed(session)
            return
        member = self.members.get(session)
        if member is None or (room_name is not None and member.room.name != room_name):
            raise CallError(p.ErrorCode.NOT_IN_CALL, "not in that call")
        await self._leave_member(member)

    async def _leave_member(self, member: Member) -> None:
        self._forget(member)
        room = member.room
        try:
            await room.host.leave(member.participant)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            log.warning("leave not delivered to the SFU", extra={"error": str(exc)})
        self._broadcast(room, p.CallParticipantLeft(seq=0, room=room.name,
                                                    participant=member.participant))  # fmt: skip
        self._close_if_empty(room)

    def _forget(self, member: Member) -> None:
        if member.session is not None:
            self.members.pop(member.session, None)
        if member.expiry is not None:
            member.expiry.cancel()
        self._detached.pop((member.identity, member.device), None)
        self._by_participant.pop(member.participant, None)
        member.room.members.pop(member.participant, None)

    def _is_relayed(self, session: Session, room_name: str) -> bool:
        """True if ``session`` takes part in ``room_name`` held by another node."""
        relayed = self._relayed.get(session)
        return relayed is not None and relayed[0] == room_name

    def _drop_relayed(self, session: Session) -> None:
        self._relayed.pop(session, None)
        self._relayed_ids.pop(getattr(session, "id", ""), None)

    async def session_gone(self, session: Session) -> None:
        """The socket closed: keep the participant for ``call_resume_s`` (its media goes on)
        so that the same device can come back and resume, else it leaves."""
        if session in self._relayed:
            try:
                await self._relay_call(session, "gone")
            except CallError as exc:
                log.warning("relayed departure not delivered", extra={"error": exc.message})
            finally:
                self._drop_relayed(session)
            return
        member = self.members.pop(session, None)
        if member is None:
            return
        if self.settings.call_resume_s <= 0:
            self.members[session] = member
            await self.leave(session)
            return
        member.session = None
        key = (member.identity, member.device)
        previous = self._detached.get(key)
        if previous is not None and previous is not member:
            self._spawn(self._expire(previous))
        self._detached[key] = member
        member.expiry = asyncio.get_running_loop().call_later(
            self.settings.call_resume_s, lambda: self._spawn(self._expire(member))
        )
        # Where to resume, for a device that comes back on another node.
        try:
            await self._redis.set(
                resume_key(member.identity, member.device),
                f"{self.settings.node_id}\n{member.room.name}",
                px=max(1, int(self.settings.call_resume_s * 1000)),
            )
        except (RedisError, OSError) as exc:
            log.warning("resume marker not stored", extra={"error": str(exc)})

    async def _expire(self, member: Member) -> None:
        if member.session is not None or member.participant not in self._by_participant:
            return
        await self._forget_resume(member.identity, member.device)
        await self._leave_member(member)

    def attach(self, session: Session) -> bool:
        """A device said hello: if it was in a call moments ago, it resumes that call."""
        key = (session.identity, session.device)
        member = self._detached.pop(key, None)
        if member is None:
            # Its old socket may not have closed yet (it is being replaced right now).
            for old, candidate in list(self.members.items()):
                if old is not session and (candidate.identity, candidate.device) == key:
                    del self.members[old]
                    member = candidate
                    break
        if member is None:
            return False
        if member.expiry is not None:
            member.expiry.cancel()
            member.expiry = None
        self._spawn(self._forget_resume(member.identity, member.device))
        member.session = session
        self.members[session] = member
        session.send_event(p.EncodedEvent(p.CallResumed(
            seq=0, room=member.room.name, participant=member.participant,
        )))  # fmt: skip
        held, member.held = member.held, []
        for event in held:
            member.send(event)
        return True

    async def resume_elsewhere(self, session: Session) -> None:
        """A device said hello here, but the call it dropped out of moments ago is held by
        another node (its room lives there): resume it through the relay."""
        if self.relay is None or session in self.members or self.settings.call_resume_s <= 0:
            return
        raw = await self._redis.get(resume_key(session.identity, session.device))
        if raw is None:
            return
        owner, _, room_name = (raw.decode() if isinstance(raw, bytes) else raw).partition("\n")
        if owner == self.settings.node_id or not room_name:
            return  # held here: attach() took it back, or it has expired
        session_id = getattr(session, "id", "")
        self._relayed[session] = (room_name, owner)
        self._relayed_ids[session_id] = session
        try:
            resumed = await self._relay_call(session, "resume")
        except CallError as exc:
            resumed = False
            log.warning("resume through the relay failed", extra={"error": exc.message})
        if not resumed:
            self._drop_relayed(session)

    async def _forget_resume(self, identity: str, device: str) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._redis.delete(resume_key(identity, device))

    # --- media negotiation --------------------------------------------------------------

    def _member(self, session: Session, room_name: str) -> Member:
        member = self.members.get(session)
        if member is None or member.room.name != room_name:
            raise CallError(p.ErrorCode.NOT_IN_CALL, f"join {room_name!r} first")
        return member

    async def publish(self, session: Session, req: p.SfuPublish) -> str:
        if self._is_relayed(session, req.room):
            return str(await self._relay_call(session, "publish", args=msgspec.to_builtins(req)))
        member = self._member(session, req.room)
        layers = {mid: (x.source, x.quality, x.height) for mid, x in req.layers.items()}
        try:
            return await member.room.host.publish(
                member.participant, req.sdp, dict(req.sources), layers
            )
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise _call_error(exc) from None

    async def track_settings(self, session: Session, req: p.SfuTrackSettings) -> None:
        if self._is_relayed(session, req.room):
            await self._relay_call(session, "track_settings", args=msgspec.to_builtins(req))
            return
        member = self._member(session, req.room)
        try:
            await member.room.host.set_max_height(member.participant, req.track, req.max_height)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise _call_error(exc) from None

    def _send_layers(self, participant: str, paused: list[str]) -> None:
        member = self._by_participant.get(participant)
        if member is not None:
            member.send(p.SfuLayers(seq=0, room=member.room.name, paused=paused))

    async def answer(self, session: Session, req: p.SfuAnswer) -> None:
        if self._is_relayed(session, req.room):
            await self._relay_call(session, "answer", args=msgspec.to_builtins(req))
            return
        member = self._member(session, req.room)
        try:
            await member.room.host.answer(member.participant, req.sdp)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise _call_error(exc) from None

    async def add_candidate(self, session: Session, req: p.SfuCandidate) -> None:
        if self._is_relayed(session, req.room):
            await self._relay_call(session, "candidate", args=msgspec.to_builtins(req))
            return
        member = self._member(session, req.room)
        try:
            await member.room.host.add_candidate(
                member.participant, req.pc, req.candidate, req.sdp_mid, req.sdp_mline_index
            )
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise _call_error(exc) from None

    # --- participant state and room admin ---------------------------------------------

    async def set_state(self, session: Session, req: p.CallState) -> None:
        if self._is_relayed(session, req.room):
            await self._relay_call(session, "state", args=msgspec.to_builtins(req))
            return
        member = self._member(session, req.room)
        for kind in ("audio", "video"):
            muted = req.audio_muted if kind == "audio" else req.video_muted
            if muted is None:
                continue
            setattr(member, f"{kind}_muted", muted)
            if not muted and kind in member.paused:  # unmuting lifts an admin's mute
                member.paused.discard(kind)
                await self._set_paused(member, kind, False)
        if req.screen_sharing is not None:
            member.screen_sharing = req.screen_sharing
        state = p.CallParticipantState(seq=0, room=req.room, participant=member.info())
        self._broadcast(member.room, state, skip=member)

    def _admin_target(self, session: Session, room_name: str, target: str) -> tuple[Member, Member]:
        member = self._member(session, room_name)
        if session.claims is None or not session.claims.grants.admin:
            raise CallError(p.ErrorCode.FORBIDDEN, "only a room admin may do that")
        found = member.room.members.get(target)
        if found is None:
            raise CallError(p.ErrorCode.UNKNOWN_PARTICIPANT, "no such participant in the room")
        return member, found

    async def mute(self, session: Session, req: p.CallMute) -> None:
        if self._is_relayed(session, req.room):
            await self._relay_call(session, "mute", args=msgspec.to_builtins(req))
            return
        admin, target = self._admin_target(session, req.room, req.participant)
        target.paused.add(req.kind)
        setattr(target, f"{req.kind}_muted", True)
        await self._set_paused(target, req.kind, True)
        target.send(p.CallMuted(seq=0, room=req.room, kind=req.kind, by=admin.participant))
        state = p.CallParticipantState(seq=0, room=req.room, participant=target.info())
        self._broadcast(target.room, state, skip=target)

    async def remove(self, session: Session, req: p.CallRemove) -> None:
        if self._is_relayed(session, req.room):
            await self._relay_call(session, "remove", args=msgspec.to_builtins(req))
            return
        admin, target = self._admin_target(session, req.room, req.participant)
        target.send(p.CallRemoved(seq=0, room=req.room, by=admin.participant))
        await self._leave_member(target)

    async def restart(self, session: Session, req: p.SfuRestart) -> None:
        if self._is_relayed(session, req.room):
            await self._relay_call(session, "restart", args=msgspec.to_builtins(req))
            return
        member = self._member(session, req.room)
        try:
            await member.room.host.restart_media(member.participant)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise _call_error(exc) from None

    async def pin(self, session: Session, req: p.CallPin) -> None:
        if self._is_relayed(session, req.room):
            await self._relay_call(session, "pin", args=msgspec.to_builtins(req))
            return
        member = self._member(session, req.room)
        unknown = [x for x in req.participants if x not in member.room.members]
        if unknown:
            raise CallError(p.ErrorCode.UNKNOWN_PARTICIPANT, f"not in the room: {unknown[0]}")
        try:
            await member.room.host.set_pinned(member.participant, list(req.participants))
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise _call_error(exc) from None

    async def _set_paused(self, member: Member, kind: str, paused: bool) -> None:
        try:
            await member.room.host.set_paused(member.participant, kind, paused)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise _call_error(exc) from None

    async def stats(self, session: Session, room_name: str) -> p.CallStatsOk:
        if self._is_relayed(session, room_name):
            return msgspec.convert(await self._relay_call(session, "stats"), p.CallStatsOk)
        member = self._member(session, room_name)
        try:
            value = await member.room.host.stats(member.participant)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise _call_error(exc) from None
        return msgspec.convert({"type": "ok", "re": "", "room": room_name, **value}, p.CallStatsOk)

    # --- events from the rooms ----------------------------------------------------------

    def _send_offer(self, participant: str, sdp: str, tracks: list[dict[str, str]]) -> None:
        member = self._by_participant.get(participant)
        if member is None:
            return
        event = p.SfuOffer(seq=0, room=member.room.name, sdp=sdp,
                           tracks=msgspec.convert(tracks, list[p.TrackInfo]))  # fmt: skip
        member.send(event)

    def _send_speakers(self, room_name: str, speakers: list[tuple[str, int]]) -> None:
        room = self.rooms.get(room_name)
        if room is None:
            return
        self._broadcast(room, p.CallSpeakers(
            seq=0, room=room_name,
            speakers=[p.Speaker(participant=who, level=level) for who, level in speakers],
        ))  # fmt: skip

    def _worker_event(
        self, worker: WorkerHost, event: ipc.Offer | ipc.Speakers | ipc.Metrics | ipc.Layers
    ) -> None:
        if isinstance(event, ipc.Offer):
            self._send_offer(event.participant, event.sdp, event.tracks)
        elif isinstance(event, ipc.Layers):
            self._send_layers(event.participant, event.paused)
        elif isinstance(event, ipc.Speakers):
            self._send_speakers(event.room, [(w, lvl) for w, lvl in event.speakers])
        else:
            worker.metrics = event

    def _worker_lost(self, worker: WorkerHost, rooms: set[str]) -> None:
        """Its rooms are gone: tell their participants to join again (clients do it)."""
        for name in rooms:
            room = self.rooms.get(name)
            if room is None or room.host is not worker:
                continue
            del self.rooms[name]
            closer = self._closers.pop(name, None)
            if closer is not None:
                closer.cancel()
            event = p.CallReconnect(seq=0, room=name, reason="sfu_restart")
            encoded = p.EncodedEvent(event)
            for member in list(room.members.values()):
                self._forget(member)
                if member.session is not None:  # a detached one rejoins when it resumes
                    member.session.send_event(encoded)
            self._spawn(self._release_claim(room))

    def _broadcast(self, room: CallRoom, event: p.Event, skip: Member | None = None) -> None:
        encoded = p.EncodedEvent(event)
        for member in room.members.values():
            if member is not skip:
                member.send(event, encoded)

    # --- metrics ------------------------------------------------------------------------

    def _snapshots(self) -> tuple[dict[str, dict[str, int]], list[TrackRow], int]:
        if self.local is not None:
            rooms, tracks = self.local.snapshot()
            return rooms, tracks, self.local.decoders_created
        rooms, tracks, decoders = {}, [], 0
        assert self.pool is not None
        for worker in self.pool.workers:
            if worker is not None and worker.metrics is not None:
                rooms.update(worker.metrics.rooms)
                tracks += [tuple(t) for t in worker.metrics.tracks]  # type: ignore[misc]
                decoders += worker.metrics.decoders_created
        return rooms, tracks, decoders

    def collect_metrics(self) -> Iterator[Metric]:
        """Prometheus families for rooms, tracks and workers, read at scrape time."""
        rooms, tracks, decoders = self._snapshots()
        gauge = GaugeMetricFamily("huddle_sfu_rooms", "Call rooms open on this node")
        gauge.add_metric([], len(self.rooms))
        yield gauge
        gauge = GaugeMetricFamily(
            "huddle_sfu_decoders_created", "Media decoders created by the SFU (must stay 0)"
        )
        gauge.add_metric([], decoders)
        yield gauge
        if self.pool is not None:
            workers = GaugeMetricFamily(
                "huddle_sfu_worker_participants", "Participants per SFU worker",
                labels=["worker", "pid"],
            )  # fmt: skip
            for worker in self.pool.workers:
                if worker is not None:
                    workers.add_metric([str(worker.index), str(worker.pid)], worker.participants)
            yield workers
            restarts = CounterMetricFamily("huddle_sfu_worker_restarts", "SFU workers restarted")
            restarts.add_metric([], self.pool.restarts)
            yield restarts
        counters = ("packets_in", "bytes_in", "packets_forwarded", "bytes_forwarded",
                    "retransmitted", "keyframe_requests", "packets_lost")  # fmt: skip
        families: dict[str, GaugeMetricFamily | CounterMetricFamily] = {
            name: CounterMetricFamily(f"huddle_sfu_room_{name}", f"Room: {name}", labels=["room"])
            for name in counters
        }
        for name in ("participants", "tracks", "outputs"):
            families[name] = GaugeMetricFamily(f"huddle_sfu_room_{name}", f"Room: {name}",
                                               labels=["room"])  # fmt: skip
        for room_name, totals in rooms.items():
            for name, value in totals.items():
                families[name].add_metric([room_name], value)
        yield from families.values()
        labels = ["room", "participant", "identity", "track", "kind"]
        track_in = CounterMetricFamily(
            "huddle_sfu_track_packets_in", "Packets received per published track", labels=labels
        )
        track_out = CounterMetricFamily(
            "huddle_sfu_track_packets_forwarded", "Packets forwarded per published track",
            labels=labels,
        )  # fmt: skip
        for room_name, participant, identity, key, kind, packets_in, forwarded in tracks:
            track_in.add_metric([room_name, participant, identity, key, kind], packets_in)
            track_out.add_metric([room_name, participant, identity, key, kind], forwarded)
        yield track_in
        yield track_out

    # --- room lifetime ------------------------------------------------------------------

    async def _claim(self, room_name: str, claim: str) -> None:
        key = room_node_key(room_name)
        if await self._redis.set(key, claim, nx=True, ex=ROOM_CLAIM_TTL_S):
            return
        owner = await self._redis.get(key)
        if isinstance(owner, bytes):
            owner = owner.decode()
        if owner is not None and owner.split("#", 1)[0] != self.settings.node_id:
            raise _Elsewhere(owner.split("#", 1)[0])
        await self._redis.set(key, claim, ex=ROOM_CLAIM_TTL_S)

    async def refresh_claims(self) -> None:
        if not self.rooms:
            return
        pipe = self._redis.pipeline(transaction=False)
        for room in self.rooms.values():
            pipe.set(room_node_key(room.name), room.claim, ex=ROOM_CLAIM_TTL_S)
        await pipe.execute()

    async def _release_claim(self, room: CallRoom) -> None:
        try:
            await self._release(keys=[room_node_key(room.name)], args=[room.claim])
        except Exception as exc:  # the claim expires by itself
            log.warning("room claim not released", extra={"room": room.name, "error": str(exc)})

    def _close_if_empty(self, room: CallRoom) -> None:
        if room.members or room.name in self._closers or self.rooms.get(room.name) is not room:
            return
        loop = asyncio.get_running_loop()
        self._closers[room.name] = loop.call_later(
            self.settings.room_empty_grace_s, lambda: self._spawn(self._close(room))
        )

    def _spawn(self, job: Coroutine[object, object, None]) -> None:
        task = asyncio.ensure_future(job)
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, room: CallRoom) -> None:
        self._closers.pop(room.name, None)
        if room.members or self.rooms.get(room.name) is not room:
            return
        del self.rooms[room.name]
        try:
            await room.host.close_room(room.name)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            log.warning("room close not delivered", extra={"room": room.name, "error": str(exc)})
        await self._release_claim(room)
        log.info("room closed", extra={"room": room.name})

    async def close(self) -> None:
        for timer in self._closers.values():
            timer.cancel()
        self._closers.clear()
        for room in list(self.rooms.values()):
            await self._release_claim(room)
        for member in list(self._detached.values()):
            if member.expiry is not None:
                member.expiry.cancel()
        self._detached.clear()
        self.rooms.clear()
        self.members.clear()
        self._by_participant.clear()
        if self.local is not None:
            await self.local.close()
        if self.pool is not None:
            await self.pool.stop()


def _call_error(exc: SfuError | ipc.RemoteError | ipc.ChannelClosed) -> CallError:
    if isinstance(exc, ipc.ChannelClosed):
        return CallError(p.ErrorCode.UNAVAILABLE, "the SFU worker is restarting; join again")
    return CallError(exc.code, exc.message)

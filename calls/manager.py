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
from collections.abc import Coroutine, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

import msgspec
from prometheus_client.metrics_core import Metric

from calls import metrics
from calls.config import CallsConfig
from calls.group import ConversationCalls
from calls.members import CallError, CallRoom, Member, Session, call_error
from calls.ownership import Elsewhere, RoomOwnership, room_node_key
from calls.relay import Relay, RelayRequest, RemoteEndpoint
from calls.remote import RemoteRooms
from sfu import ipc
from sfu.aiortc_glue import install, server_rtc_configuration
from sfu.host import LocalHost, RoomHost
from sfu.ice_servers import ice_servers
from sfu.pool import WorkerHost, WorkerPool
from sfu.room import RoomPolicy, SfuError
from sfu.worker import WorkerConfig
from signaling import protocol as p
from signaling.keys import resume_key
from signaling.presence import devices_key
from signaling.redis_client import UNREACHABLE_ERRORS, RedisClient

if TYPE_CHECKING:
    from signaling.auth import Claims

log = logging.getLogger("huddle.calls")

# A worker's first offer to a joining participant can be read before the join reply has been
# handled (both wait in the pipe when the node is busy); it is kept this long for the
# participant the reply is about to register. The worker offers nothing more to it until
# that offer is answered, so dropping it would leave the participant without media.
EARLY_OFFER_TTL_S: Final = 30.0

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
    def __init__(
        self, settings: CallsConfig, client: RedisClient, relay: Relay | None = None
    ) -> None:
        install(
            host_addresses=settings.ice_addresses,
            port_range=(
                (settings.ice_port_min, settings.ice_port_max) if settings.ice_port_min else None
            ),
        )
        self.settings = settings
        self._redis = client
        self.ownership = RoomOwnership(client, settings.node_id, settings.presence_ttl_s)
        self.rooms: dict[str, CallRoom] = {}
        self.members: dict[Session, Member] = {}
        self._by_participant: dict[str, Member] = {}
        # participant -> (when, sdp, tracks) of an offer that came before its join reply
        self._early_offers: dict[str, tuple[float, str, list[dict[str, str]]]] = {}
        self._detached: dict[tuple[str, str], Member] = {}
        # What the last check_remote found gone: gone at the next one too, it is acted on.
        self._suspects: set[object] = set()
        self.relay = relay
        self.remote = RemoteRooms(relay)
        if relay is not None:
            relay.serve = self._serve_relayed
            relay.deliver = self.remote.deliver
        self._closers: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Future[None]] = set()
        self.conversations = ConversationCalls(self._spawn)
        self._opening: dict[str, asyncio.Future[CallRoom]] = {}
        policy = RoomPolicy(
            capacity=settings.room_capacity,
            select_above=settings.selective_forwarding_above,
            audio_max=settings.audio_streams_max,
            video_last_n=settings.video_last_n,
            transport_cc=settings.sfu_transport_cc,
        )
        self.local: LocalHost | None = None
        self.pool: WorkerPool | None = None
        workers = settings.sfu_workers if settings.sfu_workers >= 0 else (os.cpu_count() or 1)
        if workers == 0:
            self.local = LocalHost(
                rtc_config=server_rtc_configuration(),
                policy=policy,
                on_offer=self._send_offer,
                on_speakers=self._send_speakers,
                announced=settings.ice_announced,
                on_layers=self._send_layers,
                on_paused=self._send_paused,
            )
        else:
            config = WorkerConfig(
                index=0,
                ice_addresses=list(settings.ice_addresses),
                policy=dataclasses.asdict(policy),
                announced=settings.ice_announced,
                port_min=settings.ice_port_min,
                port_max=settings.ice_port_max,
                log_level=settings.log_level,
            )
            self.pool = WorkerPool(
                workers,
                config,
                module=settings.sfu_worker_module,
                on_event=self._worker_event,
                on_lost=self._worker_lost,
            )

    async def start(self) -> None:
        if self.pool is not None:
            await self.pool.start()

    # --- membership ---------------------------------------------------------------------

    async def join(self, session: Session, room_name: str) -> p.CallJoinOk:
        claims = session.claims
        assert claims is not None
        if not claims.grants.may_join(room_name):
            raise CallError(p.ErrorCode.FORBIDDEN, f"this token may not join {room_name!r}")
        await self.conversations.check(claims.identity, room_name)
        if session in self.members or session in self.remote:
            current = (
                self.members[session].room.name
                if session in self.members
                else (self.remote.room_of(session))
            )
            raise CallError(p.ErrorCode.ALREADY_IN_CALL, f"already in room {current!r}")
        try:
            return await self._join_here(session, room_name, claims)
        except Elsewhere as elsewhere:
            if self.relay is None or isinstance(session, RemoteEndpoint):
                message = f"room {room_name!r} is open on another node"
                raise CallError(p.ErrorCode.ROOM_ELSEWHERE, message) from None
            return await self.remote.join(session, room_name, elsewhere.owner)

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

    async def _join_here(self, session: Session, room_name: str, claims: Claims) -> p.CallJoinOk:
        room = await self._open(room_name)
        closer = self._closers.pop(room_name, None)
        if closer is not None:
            closer.cancel()
        try:
            participant = await room.host.join(
                room_name,
                claims.identity,
                claims.name,
                can_publish=claims.grants.can_publish,
                can_subscribe=claims.grants.can_subscribe,
            )
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            self._close_if_empty(room)
            raise call_error(exc) from None
        member = Member(
            session=session,
            room=room,
            participant=participant,
            identity=claims.identity,
            name=claims.name,
            device=session.device,
        )
        others = [m.info() for m in room.members.values()]
        room.members[participant] = member
        self.conversations.joined(room, claims.identity)
        self.members[session] = member
        self._by_participant[participant] = member
        early = self._early_offers.pop(participant, None)
        if early is not None:
            # Sent after the join reply, where it would have come had it not been early.
            _, sdp, tracks = early
            asyncio.get_running_loop().call_soon(self._send_offer, participant, sdp, tracks)
        joined = p.CallParticipantJoined(seq=0, room=room_name, participant=member.info())
        self._broadcast(room, joined, skip=member)
        await self._mark_in_call([member])
        return p.CallJoinOk(
            re="",
            room=room_name,
            participant=participant,
            participants=others,
            ice_servers=ice_servers(
                stun_urls=self.settings.stun_urls,
                turn_urls=self.settings.turn_urls,
                turn_secret=self.settings.turn_secret,
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
                    raise call_error(exc) from None
                host, claim = worker, f"{self.settings.node_id}#{worker.index}"
            else:
                assert self.local is not None
                host, claim = self.local, f"{self.settings.node_id}#0"
            await self.ownership.claim(name, claim)
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
        elsewhere = self.remote.room_of(session)
        if elsewhere is not None and (room_name is None or elsewhere == room_name):
            await self.remote.leave(session)
            return
        member = self.members.get(session)
        if member is None or (room_name is not None and member.room.name != room_name):
            raise CallError(p.ErrorCode.NOT_IN_CALL, "not in that call")
        await self._leave_member(member)

    async def _leave_member(self, member: Member) -> None:
        if member.session is not None:  # left on purpose (a detached one's marker is gone)
            await self._forget_resume(member.identity, member.device)
        self._forget(member)
        room = member.room
        try:
            await room.host.leave(member.participant)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            log.warning("leave not delivered to the SFU", extra={"error": str(exc)})
        self._broadcast(
            room, p.CallParticipantLeft(seq=0, room=room.name, participant=member.participant)
        )
        self._close_if_empty(room)

    def _forget(self, member: Member) -> None:
        if member.session is not None:
            self.members.pop(member.session, None)
        if member.expiry is not None:
            member.expiry.cancel()
        self._detached.pop((member.identity, member.device), None)
        self._by_participant.pop(member.participant, None)
        member.room.members.pop(member.participant, None)

    async def session_gone(self, session: Session) -> None:
        """The socket closed: keep the participant for ``call_resume_s`` (its media goes on)
        so that the same device can come back and resume, else it leaves."""
        if session in self.remote:
            await self.remote.gone(session)
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
        except UNREACHABLE_ERRORS as exc:
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
        member.session = session
        self.members[session] = member
        self._spawn(self._mark_in_call([member]))
        session.send_event(
            p.EncodedEvent(
                p.CallResumed(
                    seq=0,
                    room=member.room.name,
                    participant=member.participant,
                )
            )
        )
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
        await self.remote.resume(session, room_name, owner)

    async def _forget_resume(self, identity: str, device: str) -> None:
        with contextlib.suppress(*UNREACHABLE_ERRORS):
            await self._redis.delete(resume_key(identity, device))

    # --- media negotiation --------------------------------------------------------------

    def _member(self, session: Session, room_name: str) -> Member:
        member = self.members.get(session)
        if member is None or member.room.name != room_name:
            raise CallError(p.ErrorCode.NOT_IN_CALL, f"join {room_name!r} first")
        return member

    async def publish(self, session: Session, req: p.SfuPublish) -> str:
        if self.remote.holds(session, req.room):
            return str(await self.remote.forward(session, "publish", req))
        member = self._member(session, req.room)
        layers = {mid: (x.source, x.quality, x.height) for mid, x in req.layers.items()}
        try:
            return await member.room.host.publish(
                member.participant, req.sdp, dict(req.sources), layers
            )
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise call_error(exc) from None

    async def track_settings(self, session: Session, req: p.SfuTrackSettings) -> None:
        if self.remote.holds(session, req.room):
            await self.remote.forward(session, "track_settings", req)
            return
        member = self._member(session, req.room)
        try:
            await member.room.host.set_max_height(member.participant, req.track, req.max_height)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise call_error(exc) from None

    def _send_layers(self, participant: str, paused: list[str]) -> None:
        member = self._by_participant.get(participant)
        if member is not None:
            member.send(p.SfuLayers(seq=0, room=member.room.name, paused=paused))

    def _send_paused(self, participant: str, tracks: list[str], unselected: list[str]) -> None:
        member = self._by_participant.get(participant)
        if member is not None:
            member.send(
                p.SfuPaused(seq=0, room=member.room.name, tracks=tracks, unselected=unselected)
            )

    async def answer(self, session: Session, req: p.SfuAnswer) -> None:
        if self.remote.holds(session, req.room):
            await self.remote.forward(session, "answer", req)
            return
        member = self._member(session, req.room)
        try:
            await member.room.host.answer(member.participant, req.sdp)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise call_error(exc) from None

    async def add_candidate(self, session: Session, req: p.SfuCandidate) -> None:
        if self.remote.holds(session, req.room):
            await self.remote.forward(session, "candidate", req)
            return
        member = self._member(session, req.room)
        try:
            await member.room.host.add_candidate(
                member.participant, req.pc, req.candidate, req.sdp_mid, req.sdp_mline_index
            )
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise call_error(exc) from None

    # --- participant state and room admin ---------------------------------------------

    async def set_state(self, session: Session, req: p.CallState) -> None:
        if self.remote.holds(session, req.room):
            await self.remote.forward(session, "state", req)
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
        if self.remote.holds(session, req.room):
            await self.remote.forward(session, "mute", req)
            return
        admin, target = self._admin_target(session, req.room, req.participant)
        target.paused.add(req.kind)
        setattr(target, f"{req.kind}_muted", True)
        await self._set_paused(target, req.kind, True)
        target.send(p.CallMuted(seq=0, room=req.room, kind=req.kind, by=admin.participant))
        state = p.CallParticipantState(seq=0, room=req.room, participant=target.info())
        self._broadcast(target.room, state, skip=target)

    async def remove(self, session: Session, req: p.CallRemove) -> None:
        if self.remote.holds(session, req.room):
            await self.remote.forward(session, "remove", req)
            return
        admin, target = self._admin_target(session, req.room, req.participant)
        target.send(p.CallRemoved(seq=0, room=req.room, by=admin.participant))
        await self._leave_member(target)

    async def restart(self, session: Session, req: p.SfuRestart) -> None:
        if self.remote.holds(session, req.room):
            await self.remote.forward(session, "restart", req)
            return
        member = self._member(session, req.room)
        try:
            await member.room.host.restart_media(member.participant)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise call_error(exc) from None

    async def pin(self, session: Session, req: p.CallPin) -> None:
        if self.remote.holds(session, req.room):
            await self.remote.forward(session, "pin", req)
            return
        member = self._member(session, req.room)
        unknown = [x for x in req.participants if x not in member.room.members]
        if unknown:
            raise CallError(p.ErrorCode.UNKNOWN_PARTICIPANT, f"not in the room: {unknown[0]}")
        try:
            await member.room.host.set_pinned(member.participant, list(req.participants))
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise call_error(exc) from None

    async def _set_paused(self, member: Member, kind: str, paused: bool) -> None:
        try:
            await member.room.host.set_paused(member.participant, kind, paused)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise call_error(exc) from None

    async def stats(self, session: Session, room_name: str) -> p.CallStatsOk:
        if self.remote.holds(session, room_name):
            return msgspec.convert(await self.remote.call(session, "stats"), p.CallStatsOk)
        member = self._member(session, room_name)
        try:
            value = await member.room.host.stats(member.participant)
        except (SfuError, ipc.RemoteError, ipc.ChannelClosed) as exc:
            raise call_error(exc) from None
        return msgspec.convert({"type": "ok", "re": "", "room": room_name, **value}, p.CallStatsOk)

    # --- events from the rooms ----------------------------------------------------------

    def _send_offer(self, participant: str, sdp: str, tracks: list[dict[str, str]]) -> None:
        member = self._by_participant.get(participant)
        if member is None:
            now = time.monotonic()
            self._early_offers = {
                k: v for k, v in self._early_offers.items() if now - v[0] < EARLY_OFFER_TTL_S
            }
            self._early_offers[participant] = (now, sdp, tracks)
            return
        event = p.SfuOffer(
            seq=0, room=member.room.name, sdp=sdp, tracks=msgspec.convert(tracks, list[p.TrackInfo])
        )
        member.send(event)

    def _send_speakers(self, room_name: str, speakers: list[tuple[str, int]]) -> None:
        room = self.rooms.get(room_name)
        if room is None:
            return
        self._broadcast(
            room,
            p.CallSpeakers(
                seq=0,
                room=room_name,
                speakers=[p.Speaker(participant=who, level=level) for who, level in speakers],
            ),
        )

    def _worker_event(
        self,
        worker: WorkerHost,
        event: ipc.Offer | ipc.Speakers | ipc.Metrics | ipc.Layers | ipc.Paused,
    ) -> None:
        if isinstance(event, ipc.Offer):
            self._send_offer(event.participant, event.sdp, event.tracks)
        elif isinstance(event, ipc.Layers):
            self._send_layers(event.participant, event.paused)
        elif isinstance(event, ipc.Paused):
            self._send_paused(event.participant, event.tracks, event.unselected)
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

    def collect_metrics(self) -> Iterator[Metric]:
        """Prometheus families for rooms, tracks and workers, read at scrape time."""
        return metrics.collect(len(self.rooms), self.local, self.pool)

    # --- room lifetime ------------------------------------------------------------------

    async def refresh_claims(self) -> None:
        await self.ownership.refresh((room.name, room.claim) for room in self.rooms.values())
        await self._mark_in_call(m for m in self.members.values() if m.session is not None)

    async def _mark_in_call(self, members: Iterable[Member]) -> None:
        """Where each member's device is in a call (``resume_key``: this node and the room),
        kept while it is in it: a device that says hello on another node while its old
        connection here is still open (replaced: a network change) finds its call at once,
        without waiting for the old connection to close (``resume_elsewhere``)."""
        if self.settings.call_resume_s <= 0:
            return
        pipe = self._redis.pipeline(transaction=False)
        for member in members:
            pipe.set(
                resume_key(member.identity, member.device),
                f"{self.settings.node_id}\n{member.room.name}",
                px=self.ownership.ttl_ms,
            )
        if not len(pipe):
            return
        try:
            await pipe.execute()
        except UNREACHABLE_ERRORS as exc:
            log.warning("call markers not stored", extra={"error": str(exc)})

    async def check_remote(self) -> None:
        """Members of this node's rooms whose device is on a node that died leave as if
        their connection had closed (they may still come back within ``call_resume_s``):
        their device's presence entry has expired, or another connection took it. And
        this node's devices in rooms of a node that died (its claim on the room expired, or
        another node holds it now) are told to join again (``call.reconnect``). Either only
        when two checks in a row find it so: an entry or a claim can be missing for a moment
        (a Redis that restarted without them, until their nodes write them again), and the
        calls of live devices must not end for that."""
        remote = [
            (session, member)
            for session, member in self.members.items()
            if isinstance(session, RemoteEndpoint)
        ]
        elsewhere = self.remote.rooms()
        if not remote and not elsewhere:
            return
        pipe = self._redis.pipeline(transaction=False)
        for session, _ in remote:
            pipe.hget(devices_key(session.identity), session.device)
        for _, (room_name, _owner) in elsewhere:
            pipe.get(room_node_key(room_name))
        replies = iter(await pipe.execute())
        now_ms = time.time() * 1000
        suspects, self._suspects = self._suspects, set()
        for session, member in remote:
            if not _device_alive(next(replies), session.session_id, now_ms):
                if session not in suspects:
                    self._suspects.add(session)
                    continue
                extra = {"origin": session.origin, "participant": member.participant}
                log.info("a member's node is gone", extra=extra)
                if self.relay is not None:
                    self.relay.endpoints.pop((session.origin, session.session_id), None)
                await self.session_gone(session)
        for local, (room_name, owner) in elsewhere:
            claim = next(replies)
            holder = (claim.decode() if isinstance(claim, bytes) else claim or "").split("#")[0]
            if holder != owner:
                if (local, room_name) not in suspects:
                    self._suspects.add((local, room_name))
                    continue
                self.remote.lost(local, room_name, "node_lost")

    async def _release_claim(self, room: CallRoom) -> None:
        await self.ownership.release(room.name, room.claim)

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
        self.conversations.closed(room)
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
        # Its participants on other nodes join again: the room opens anew on a node that is
        # up. Those connected here are closed (1001), come back elsewhere, and find no call
        # to resume there (no marker): their clients join again too.
        markers = []
        for room in self.rooms.values():
            event = p.EncodedEvent(p.CallReconnect(seq=0, room=room.name, reason="node_stopped"))
            for member in room.members.values():
                markers.append(resume_key(member.identity, member.device))
                if isinstance(member.session, RemoteEndpoint):
                    member.session.send_event(event)
        if markers:
            with contextlib.suppress(*UNREACHABLE_ERRORS):
                await self._redis.delete(*markers)
        if self.relay is not None:
            await self.relay.flush()
        for member in list(self._detached.values()):
            if member.expiry is not None:
                member.expiry.cancel()
        self._detached.clear()
        self.rooms.clear()
        self.members.clear()
        self._by_participant.clear()
        self._early_offers.clear()
        if self.local is not None:
            await self.local.close()
        if self.pool is not None:
            await self.pool.stop()


def _device_alive(raw: bytes | str | None, session_id: str, now_ms: float) -> bool:
    """Whether a device's presence entry (``signaling.presence``) is still that connection's."""
    if raw is None:
        return False
    try:
        entry = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return False
    return isinstance(entry, dict) and entry.get("k") == session_id and entry.get("x", 0) > now_ms

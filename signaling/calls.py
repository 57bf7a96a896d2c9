"""Group calls on this node: sessions joined to SFU rooms, and the room's events to them.

A room lives on exactly one node: the node that opens it claims ``huddle:{room:NAME}:node``
in Redis (refreshed while the room lives). A join for a room claimed by another node is
refused with ``room_elsewhere`` until relaying between nodes exists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Final

import redis.asyncio as redis
from aiortc import RTCConfiguration

from huddle.config import Settings
from sfu.aiortc_glue import check_version, use_host_addresses
from sfu.ice_servers import ice_servers
from sfu.room import Participant, Room, RoomPolicy, SfuError
from signaling import protocol as p

if TYPE_CHECKING:
    from signaling.session import Session

log = logging.getLogger("huddle.calls")
ROOM_CLAIM_TTL_S: Final = 60

_RELEASE: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def room_node_key(room: str) -> str:
    return f"huddle:{{room:{room}}}:node"


class CallError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CallManager:
    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        check_version()
        if settings.ice_addresses:
            use_host_addresses(settings.ice_addresses)
        self.settings = settings
        self._redis = client
        self._release = client.register_script(_RELEASE)
        self.rooms: dict[str, Room] = {}
        self.participants: dict[Session, Participant] = {}
        self._sessions: dict[str, Session] = {}
        self._closers: dict[str, asyncio.TimerHandle] = {}
        self._closing: set[asyncio.Future[None]] = set()
        self._rtc_config = RTCConfiguration(iceServers=[])
        self._policy = RoomPolicy(
            capacity=settings.room_capacity,
            select_above=settings.selective_forwarding_above,
            audio_max=settings.audio_streams_max,
            video_last_n=settings.video_last_n,
        )

    # --- membership ---------------------------------------------------------------------

    async def join(self, session: Session, room_name: str) -> p.CallJoinOk:
        claims = session.claims
        assert claims is not None
        if not claims.grants.may_join(room_name):
            raise CallError(p.ErrorCode.FORBIDDEN, f"this token may not join {room_name!r}")
        if session in self.participants:
            current = self.participants[session].room.name
            raise CallError(p.ErrorCode.ALREADY_IN_CALL, f"already in room {current!r}")
        room = self.rooms.get(room_name)
        if room is None:
            await self._claim(room_name)
            room = self.rooms.get(room_name)  # another join may have opened it meanwhile
            if room is None:
                room = self.rooms[room_name] = Room(
                    room_name, rtc_config=self._rtc_config, policy=self._policy,
                    on_offer=self._send_offer, on_speakers=self._send_speakers,
                )  # fmt: skip
        closer = self._closers.pop(room_name, None)
        if closer is not None:
            closer.cancel()
        try:
            participant = room.join(
                claims.identity, claims.name,
                can_publish=claims.grants.can_publish, can_subscribe=claims.grants.can_subscribe,
            )  # fmt: skip
        except SfuError as exc:
            self._close_if_empty(room)
            raise CallError(exc.code, exc.message) from None
        self.participants[session] = participant
        self._sessions[participant.id] = session
        joined = p.EncodedEvent(
            p.CallParticipantJoined(seq=0, room=room_name, participant=_info(participant))
        )
        self._broadcast(room, joined, skip=participant)
        return p.CallJoinOk(
            re="",
            room=room_name,
            participant=participant.id,
            participants=[_info(x) for x in room.participants.values() if x is not participant],
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

    async def leave(self, session: Session, room_name: str | None = None) -> None:
        participant = self.participants.get(session)
        if participant is None or (room_name is not None and participant.room.name != room_name):
            raise CallError(p.ErrorCode.NOT_IN_CALL, "not in that call")
        del self.participants[session]
        self._sessions.pop(participant.id, None)
        room = participant.room
        await room.leave(participant)
        left = p.EncodedEvent(
            p.CallParticipantLeft(seq=0, room=room.name, participant=participant.id)
        )
        self._broadcast(room, left)
        self._close_if_empty(room)

    async def session_gone(self, session: Session) -> None:
        if session in self.participants:
            await self.leave(session)

    # --- media negotiation --------------------------------------------------------------

    def _participant(self, session: Session, room_name: str) -> Participant:
        participant = self.participants.get(session)
        if participant is None or participant.room.name != room_name:
            raise CallError(p.ErrorCode.NOT_IN_CALL, f"join {room_name!r} first")
        return participant

    async def publish(self, session: Session, req: p.SfuPublish) -> str:
        participant = self._participant(session, req.room)
        try:
            return await participant.room.publish(participant, req.sdp, dict(req.sources))
        except SfuError as exc:
            raise CallError(exc.code, exc.message) from None

    async def answer(self, session: Session, req: p.SfuAnswer) -> None:
        participant = self._participant(session, req.room)
        try:
            await participant.room.subscriber_answer(participant, req.sdp)
        except SfuError as exc:
            raise CallError(exc.code, exc.message) from None

    def _send_offer(self, participant: Participant, sdp: str, tracks: list[dict[str, str]]) -> None:
        session = self._sessions.get(participant.id)
        if session is None:
            return
        event = p.SfuOffer(
            seq=0, room=participant.room.name, sdp=sdp,
            tracks=[p.TrackInfo(**t) for t in tracks],  # type: ignore[arg-type]
        )  # fmt: skip
        session.send_event(p.EncodedEvent(event))

    def _send_speakers(self, room: Room, speakers: list[tuple[str, int]]) -> None:
        event = p.CallSpeakers(
            seq=0,
            room=room.name,
            speakers=[p.Speaker(participant=who, level=level) for who, level in speakers],
        )
        self._broadcast(room, p.EncodedEvent(event))

    def _broadcast(
        self, room: Room, event: p.EncodedEvent, skip: Participant | None = None
    ) -> None:
        for participant in room.participants.values():
            if participant is skip:
                continue
            session = self._sessions.get(participant.id)
            if session is not None:
                session.send_event(event)

    # --- room lifetime ------------------------------------------------------------------

    async def _claim(self, room_name: str) -> None:
        key = room_node_key(room_name)
        node = self.settings.node_id
        if await self._redis.set(key, node, nx=True, ex=ROOM_CLAIM_TTL_S):
            return
        owner = await self._redis.get(key)
        if isinstance(owner, bytes):
            owner = owner.decode()
        if owner is not None and owner != node:
            raise CallError(
                p.ErrorCode.ROOM_ELSEWHERE, f"room {room_name!r} is open on another node"
            )
        await self._redis.set(key, node, ex=ROOM_CLAIM_TTL_S)

    async def refresh_claims(self) -> None:
        if not self.rooms:
            return
        pipe = self._redis.pipeline(transaction=False)
        for name in self.rooms:
            pipe.set(room_node_key(name), self.settings.node_id, ex=ROOM_CLAIM_TTL_S)
        await pipe.execute()

    def _close_if_empty(self, room: Room) -> None:
        if not room.empty or room.name in self._closers:
            return
        loop = asyncio.get_running_loop()
        self._closers[room.name] = loop.call_later(
            self.settings.room_empty_grace_s, self._spawn_close, room
        )

    def _spawn_close(self, room: Room) -> None:
        task = asyncio.ensure_future(self._close(room))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, room: Room) -> None:
        self._closers.pop(room.name, None)
        if not room.empty or self.rooms.get(room.name) is not room:
            return
        del self.rooms[room.name]
        await room.close()
        try:
            await self._release(keys=[room_node_key(room.name)], args=[self.settings.node_id])
        except Exception as exc:  # the claim expires by itself
            log.warning("room claim not released", extra={"room": room.name, "error": str(exc)})
        log.info("room closed", extra={"room": room.name})

    async def close(self) -> None:
        for timer in self._closers.values():
            timer.cancel()
        self._closers.clear()
        for room in list(self.rooms.values()):
            for participant in list(room.participants.values()):
                self._sessions.pop(participant.id, None)
            await room.close()
            try:
                await self._release(keys=[room_node_key(room.name)], args=[self.settings.node_id])
            except Exception as exc:
                log.warning("room claim not released", extra={"error": str(exc)})
        self.rooms.clear()
        self.participants.clear()


def _info(participant: Participant) -> p.ParticipantInfo:
    return p.ParticipantInfo(
        participant=participant.id, identity=participant.identity, name=participant.name
    )

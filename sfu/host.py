"""Where rooms live: ``LocalHost`` keeps them in this process (inside a worker, or in the node
itself when it runs no workers); ``sfu.pool.WorkerHost`` offers the same calls over IPC."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
from aiortc import RTCConfiguration

from sfu import stats as sfu_stats
from sfu.room import Participant, Room, RoomPolicy, SfuError

OfferSink = Callable[[str, str, list[dict[str, str]]], None]
LayersSink = Callable[[str, list[str]], None]
# A subscriber's received tracks not sent: (downlink has no room, stream selection left out).
PausedSink = Callable[[str, list[str], list[str]], None]
SpeakersSink = Callable[[str, list[tuple[str, int]]], None]
TrackRow = tuple[str, str, str, str, str, int, int]


class RoomHost(Protocol):
    """The calls a node makes on whatever holds a room: each is one worker RPC
    (``sfu.ipc.RPCS``), its parameters the fields of its request."""

    async def join(
        self, room: str, identity: str, name: str, *, can_publish: bool, can_subscribe: bool
    ) -> str: ...

    async def publish(
        self,
        participant: str,
        sdp: str,
        sources: dict[str, str],
        layers: dict[str, tuple[str, int, int]],
    ) -> str: ...

    async def set_max_height(self, participant: str, track: str, height: int | None) -> None: ...

    async def answer(self, participant: str, sdp: str) -> None: ...

    async def leave(self, participant: str) -> None: ...

    async def stats(self, participant: str) -> dict[str, Any]: ...

    async def close_room(self, room: str) -> None: ...

    async def set_paused(self, participant: str, kind: str, paused: bool) -> None: ...

    async def set_pinned(self, participant: str, pinned: list[str]) -> None: ...

    async def restart_media(self, participant: str) -> None: ...

    async def add_candidate(
        self,
        participant: str,
        pc: str,
        candidate: str | None,
        sdp_mid: str | None,
        sdp_mline_index: int | None,
    ) -> None: ...


class LocalHost:
    def __init__(
        self,
        *,
        rtc_config: RTCConfiguration,
        policy: RoomPolicy,
        on_offer: OfferSink,
        on_speakers: SpeakersSink,
        announced: dict[str, str] | None = None,
        on_layers: LayersSink | None = None,
        on_paused: PausedSink | None = None,
    ) -> None:
        self.rooms: dict[str, Room] = {}
        self._on_layers = on_layers
        self._on_paused = on_paused
        self._announced = announced or {}
        self.participants: dict[str, Participant] = {}
        self._rtc_config = rtc_config
        self._policy = policy
        self._on_offer = on_offer
        self._on_speakers = on_speakers
        self._meter = sfu_stats.RateMeter()
        self.decoders_created = 0  # set by the worker's decoder spy; must stay 0

    def _layers(self, participant: str, paused: list[str]) -> None:
        if self._on_layers is not None:
            self._on_layers(participant, paused)

    def _paused(self, participant: str, tracks: list[str], unselected: list[str]) -> None:
        if self._on_paused is not None:
            self._on_paused(participant, tracks, unselected)

    def _participant(self, participant: str) -> Participant:
        found = self.participants.get(participant)
        if found is None:
            raise SfuError("not_in_call", "unknown participant")
        return found

    async def join(
        self, room: str, identity: str, name: str, *, can_publish: bool, can_subscribe: bool
    ) -> str:
        found = self.rooms.get(room)
        if found is None:
            found = self.rooms[room] = Room(
                room,
                rtc_config=self._rtc_config,
                policy=self._policy,
                on_offer=lambda p, sdp, tracks: self._on_offer(p.id, sdp, tracks),
                on_speakers=lambda r, speakers: self._on_speakers(r.name, speakers),
                announced=self._announced,
                on_layers=lambda p, paused: self._layers(p.id, paused),
                on_paused=lambda p, tracks, unselected: self._paused(p.id, tracks, unselected),
            )
        participant = found.join(
            identity, name, can_publish=can_publish, can_subscribe=can_subscribe
        )
        self.participants[participant.id] = participant
        return participant.id

    async def publish(
        self,
        participant: str,
        sdp: str,
        sources: dict[str, str],
        layers: dict[str, tuple[str, int, int]],
    ) -> str:
        p = self._participant(participant)
        return await p.room.publish(p, sdp, sources, layers)

    async def set_max_height(self, participant: str, track: str, height: int | None) -> None:
        p = self._participant(participant)
        p.room.set_max_height(p, track, height)

    async def answer(self, participant: str, sdp: str) -> None:
        p = self._participant(participant)
        await p.room.subscriber_answer(p, sdp)

    async def leave(self, participant: str) -> None:
        p = self.participants.pop(participant, None)
        if p is None:
            return
        self._meter.forget(f"out:{participant}:")
        await p.room.leave(p)

    async def stats(self, participant: str) -> dict[str, Any]:
        p = self._participant(participant)
        now = time.monotonic()
        return {
            "published": msgspec.to_builtins(sfu_stats.published(p, self._meter, now)),
            "subscribed": msgspec.to_builtins(sfu_stats.subscribed(p, self._meter, now)),
        }

    async def add_candidate(
        self,
        participant: str,
        pc: str,
        candidate: str | None,
        sdp_mid: str | None,
        sdp_mline_index: int | None,
    ) -> None:
        p = self._participant(participant)
        await p.room.add_candidate(p, pc, candidate, sdp_mid, sdp_mline_index)

    async def set_pinned(self, participant: str, pinned: list[str]) -> None:
        self._participant(participant).pinned = set(pinned)

    async def restart_media(self, participant: str) -> None:
        p = self._participant(participant)
        await p.room.restart_media(p)

    async def set_paused(self, participant: str, kind: str, paused: bool) -> None:
        p = self._participant(participant)
        p.room.set_paused(p, kind, paused)

    async def close_room(self, room: str) -> None:
        found = self.rooms.pop(room, None)
        if found is None:
            return
        for participant in list(found.participants):
            self.participants.pop(participant, None)
        await found.close()

    async def close(self) -> None:
        for room in list(self.rooms):
            await self.close_room(room)

    def snapshot(self) -> tuple[dict[str, dict[str, int]], list[TrackRow]]:
        rooms = {name: sfu_stats.room_totals(room) for name, room in self.rooms.items()}
        tracks: list[TrackRow] = []
        for room in self.rooms.values():
            for part in room.participants.values():
                for track in part.published.values():
                    f = track.forwarder
                    forwarded = sum(o.forwarded for o in f.outputs.values())
                    tracks.append(
                        (
                            room.name,
                            part.id,
                            part.identity,
                            track.key,
                            track.kind,
                            f.packets_in,
                            forwarded,
                        )
                    )
        return rooms, tracks

    @property
    def pid(self) -> int:
        return os.getpid()

"""Who takes part in a group call on this node: the devices, their rooms, their state.

Plain data and the errors call requests answer with; the manager (``calls.manager``) keeps
them and the SFU hosts (``sfu.host``) do the media.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import TYPE_CHECKING, Protocol

from sfu import ipc
from sfu.host import RoomHost
from sfu.room import SfuError
from signaling import protocol as p

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


class RingingSession(Session, Protocol):
    """A local connection placing or answering a 1:1 call: its id tells its own
    transitions apart from those of the user's other devices."""

    @property
    def id(self) -> str: ...


class CallError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def call_error(exc: SfuError | ipc.RemoteError | ipc.ChannelClosed) -> CallError:
    """What the device is told when the room's host refused or could not be reached."""
    if isinstance(exc, ipc.ChannelClosed):
        return CallError(p.ErrorCode.UNAVAILABLE, "the SFU worker is restarting; join again")
    return CallError(exc.code, exc.message)


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
            participant=self.participant,
            identity=self.identity,
            name=self.name,
            audio_muted=self.audio_muted,
            video_muted=self.video_muted,
            screen_sharing=self.screen_sharing,
        )


@dataclasses.dataclass(eq=False)
class CallRoom:
    name: str
    host: RoomHost
    claim: str
    members: dict[str, Member] = dataclasses.field(default_factory=dict)
    # A conversation's call (calls.group): its id, when it started, who joined it.
    call: str | None = None
    started: float = 0.0
    joined: list[str] = dataclasses.field(default_factory=list)

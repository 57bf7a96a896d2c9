"""sfu.room: what a subscriber is told it is not sent (sfu.paused), from its downlink and
from stream selection in a large room, on stand-ins for the connections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from aiortc import RTCConfiguration

from sfu.room import Participant, PublishedTrack, Room, RoomPolicy, Subscription


@dataclass
class _Forwarder:
    outputs: dict[int, object] = field(default_factory=lambda: {1: object()})
    active: bool = True

    def set_active(self, out: object, active: bool) -> None:
        self.active = active


@dataclass
class _Port:
    ssrc: int = 1


Told = tuple[str, list[str], list[str]]


def _room() -> tuple[Room, list[Told]]:
    told: list[Told] = []
    room = Room(
        "big",
        rtc_config=RTCConfiguration(),
        on_offer=lambda p, sdp, tracks: None,
        policy=RoomPolicy(select_above=2, audio_max=1, video_last_n=1),
        on_paused=lambda p, paused, unselected: told.append((p.id, paused, unselected)),
    )
    return room, told


def _join(room: Room, pid: str) -> Participant:
    participant = Participant(id=pid, identity=pid, name=pid, room=room)
    room.participants[pid] = participant
    return participant


def _subscribe(subscriber: Participant, owner: Participant, kind: str) -> Subscription:
    key = f"{owner.id}:{'cam' if kind == 'video' else 'mic'}"
    track = PublishedTrack(
        key=key,
        owner=owner,
        kind=kind,
        source="camera" if kind == "video" else "microphone",
        tap=cast(Any, None),
        forwarder=cast(Any, _Forwarder()),
    )
    sub = Subscription(track, cast(Any, None), cast(Any, _Port()))
    subscriber.subscriptions[key] = sub
    return sub


def test_unselected_video_is_told_with_the_downlinks_list_and_only_when_it_changed() -> None:
    room, told = _room()
    alice, bob, carol = (_join(room, pid) for pid in ("p-a", "p-b", "p-c"))
    subs = {
        (owner.id, kind): _subscribe(carol, owner, kind)
        for owner in (alice, bob)
        for kind in ("audio", "video")
    }
    # Three participants is above two: carol gets the video of the last speaker only.
    room._recent_speakers = ["p-a"]
    room._select(0.0)
    assert told == [("p-c", [], ["p-b:cam"])]  # video only, though bob's audio is left out too
    assert carol.unselected == ["p-b:cam"]
    room._select(0.25)
    assert len(told) == 1, "nothing changed: nothing told"
    # Bob speaks: his video comes, alice's goes.
    room._recent_speakers = ["p-b", "p-a"]
    room._select(0.5)
    assert told[-1] == ("p-c", [], ["p-a:cam"])
    # Carol's downlink has no room for bob's video: one event with both lists.
    bob_cam = subs[("p-b", "video")]
    room._apply(carol, {"p-b:cam": None}, {"p-b:cam": (bob_cam, [bob_cam.track])})
    assert told[-1] == ("p-c", ["p-b:cam"], ["p-a:cam"])
    assert carol.downlink_paused == ["p-b:cam"]
    # Pinned, alice's video is selected again.
    carol.pinned = {"p-a"}
    room._select(0.75)
    assert told[-1] == ("p-c", ["p-b:cam"], [])
    assert len(told) == 4

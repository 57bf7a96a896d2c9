"""A peer connection whose path is cut for good ends through ICE consent freshness, and the
CallClient starts its media over (sfu.restart) by itself: same place in the room, and the
media flows again on new connections."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Literal

import aioice.ice
import av
import msgspec
import pytest
from aiortc import MediaStreamTrack

from huddle.call import CallClient, split_candidates
from signaling import protocol as p
from tests.conftest import StartNode
from tests.helpers import eventually, local_room
from tests.media import ColorTrack, close_colour, mean_rgb
from tests.netem import LossyRelay, candidate_ports, redirect_candidates

ALICE = (230, 120, 20)
# Consent expires after CONSENT_FAILURES unanswered checks in a row, one about every
# CONSENT_INTERVAL plus aioice's 0.5 s STUN timeout: a few seconds instead of about 30. The
# SFU runs in this process, so its end expires on the same timer.
CONSENT_INTERVAL_S = 0.5
CONSENT_FAILURES = 3


class Cuttable:
    """Puts the connections of one call behind relays; ``cut()`` drops everything both ways
    on the relays made so far, for good. Later connections (those of the restart) get relays
    that are never cut.

    The SFU's candidates are rewritten to point at a relay, and the call's own candidates are
    kept from the SFU, as a NAT would: otherwise the SFU checks them directly, learns a path
    around the relay, and a cut would not cut everything."""

    def __init__(
        self, call: CallClient, kind: Literal["offer", "answer"], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        self.kind = kind
        self.relays: list[LossyRelay] = []
        self.cut_relays: list[LossyRelay] = []
        call.remote_sdp_filter = self._through_relay
        request = call.client.request

        async def without_candidates(message: p.Request, timeout: float = 15.0) -> Any:
            if isinstance(message, p.SfuPublish | p.SfuAnswer):
                message = msgspec.structs.replace(message, sdp=split_candidates(message.sdp)[0])
            return await request(message, timeout)

        monkeypatch.setattr(call.client, "request", without_candidates)

    def cut(self) -> None:
        assert self.relays, "no connection to cut"
        self.cut_relays = list(self.relays)
        for relay in self.cut_relays:
            relay.drop = relay.drop_to_server = lambda _: True

    @property
    def new_relays(self) -> list[LossyRelay]:
        return [r for r in self.relays if r not in self.cut_relays]

    async def _through_relay(self, kind: str, sdp: str) -> str:
        if kind != self.kind:
            return sdp
        for port in candidate_ports(sdp):
            relay = LossyRelay(("127.0.0.1", port), lambda _: False)
            self.relays.append(relay)
            sdp = redirect_candidates(sdp, port, await relay.start())
        return sdp

    def close(self) -> None:
        for relay in self.relays:
            relay.close()


async def _frame(track: MediaStreamTrack) -> av.VideoFrame:
    frame = await track.recv()
    assert isinstance(frame, av.VideoFrame)
    return frame


async def _sees_colour(track: MediaStreamTrack, colour: tuple[int, int, int]) -> None:
    """Frames of ``colour`` arrive on ``track``, and keep arriving."""
    async with asyncio.timeout(10):
        while not close_colour(mean_rgb(await _frame(track)), colour):
            pass  # a decoder's first pictures may be grey
        for _ in range(10):
            seen = mean_rgb(await _frame(track))
            assert close_colour(seen, colour), seen


@pytest.mark.parametrize("cut", ["subscriber", "publisher"])
async def test_a_failed_connection_restarts_the_media_by_itself(
    start_node: StartNode, monkeypatch: pytest.MonkeyPatch, cut: str
) -> None:
    """The path of bob's subscriber connection (or alice's publisher connection) is cut:
    that client restarts its media with no one asking, keeps its participant, and bob
    decodes alice's colour again on the new connections."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", CONSENT_INTERVAL_S)
    monkeypatch.setattr(aioice.ice, "CONSENT_FAILURES", CONSENT_FAILURES)
    node = await start_node(ice_addresses=["127.0.0.1"])
    alice = await node.call("alice", "restart")
    bob = await node.call("bob", "restart", can_publish=False)
    victim = bob if cut == "subscriber" else alice
    net = Cuttable(victim, "offer" if cut == "subscriber" else "answer", monkeypatch)

    await alice.publish(ColorTrack(ALICE))
    track, info = await bob.next_track()
    assert info.identity == "alice"
    await _sees_colour(track, ALICE)
    assert net.relays and all(relay.forwarded > 0 for relay in net.relays)

    membership: list[p.Event] = []
    for call in (alice, bob):
        for kind in ("call.participant_joined", "call.participant_left"):
            call.client.on(kind, membership.append)
    participants = (alice.participant, bob.participant)
    old = victim.subscriber if cut == "subscriber" else victim.publisher
    assert old is not None and old.connectionState == "connected"
    assert alice.restarts == bob.restarts == 0

    net.cut()
    started = time.monotonic()
    # Nothing but the cut: consent expires, the connection ends, the client restarts.
    await eventually(lambda: victim.restarts == 1, 15)
    took = time.monotonic() - started
    assert took >= CONSENT_INTERVAL_S * CONSENT_FAILURES * 0.8, "ended before consent expired"
    # aiortc closes a connection whose consent expired rather than reporting "failed".
    assert old.connectionState in ("failed", "closed")
    assert victim.publisher is not old and victim.subscriber is not old

    # Bob's track of alice ends, and the SFU offers it again on a new path.
    ended = await asyncio.wait_for(bob.ended.get(), 10)
    assert ended.mid == info.mid
    again, again_info = await bob.next_track()
    assert (again_info.identity, again_info.track) == ("alice", info.track)
    assert again is not track
    await _sees_colour(again, ALICE)
    assert net.new_relays and all(relay.forwarded > 0 for relay in net.new_relays)

    # The same place in the room all along: no one left or joined, the same participants.
    assert (alice.participant, bob.participant) == participants
    assert membership == []
    assert set(local_room(node, "restart").participants) == set(participants)
    assert alice.restarts + bob.restarts == 1  # only the cut connection's client restarted
    await bob.leave()
    await alice.leave()
    net.close()

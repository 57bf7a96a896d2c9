"""Track ids in a room, as docs/protocol.md (Calls) defines them: PARTICIPANT:MID for a
plain track, PARTICIPANT:SOURCE for a simulcast source, which stands for its layers."""

from __future__ import annotations

import pytest

from huddle.client import RequestError
from signaling import protocol as p
from tests.conftest import StartNode
from tests.media import ColorTrack


async def test_plain_tracks_by_mid_and_simulcast_sources_by_name(start_node: StartNode) -> None:
    node = await start_node(ice_addresses=["127.0.0.1"])
    alice = await node.call("alice", "ids")
    bob = await node.call("bob", "ids")
    try:
        await alice.publish(
            ColorTrack((200, 0, 0), (160, 96)),
            ColorTrack((0, 200, 0), (320, 192)),
            ColorTrack((0, 0, 200), (320, 192)),
            sources={0: "camera", 1: "camera", 2: "screen"},
            layers={0: ("cam", 0, 96), 1: ("cam", 1, 192)},
        )
        assert alice.publisher is not None
        mids = [t.mid or "" for t in alice.publisher.getTransceivers()]
        assert len(mids) == 3
        received = {}
        for _ in range(2):
            _, info = await bob.next_track()
            received[info.source] = info
        assert received["camera"].track == f"{alice.participant}:cam"
        assert received["screen"].track == f"{alice.participant}:{mids[2]}"
        assert {i.participant for i in received.values()} == {alice.participant}

        # sfu.track_settings takes the offer's ids; a layer's own id is not a received track.
        await bob.set_max_height(received["camera"].track, 96)
        await bob.set_max_height(received["screen"].track, None)
        with pytest.raises(RequestError) as refused:
            await bob.set_max_height(f"{alice.participant}:{mids[0]}", 96)
        assert refused.value.code == "unknown_track"

        # call.stats: a publisher's own tracks by mid (each layer), a subscriber's by offer id.
        published = await alice.client.request(p.CallStats(id="", room="ids"))
        assert sorted(t.track for t in published.published) == [
            f"{alice.participant}:{mid}" for mid in mids
        ]
        subscribed = await bob.client.request(p.CallStats(id="", room="ids"))
        assert sorted(t.track for t in subscribed.subscribed) == sorted(
            i.track for i in received.values()
        )
    finally:
        for call in (alice, bob):
            await call.close()

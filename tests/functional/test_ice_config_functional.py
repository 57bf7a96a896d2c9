"""ICE configuration: media ports from a configured range, and an announced address that
clients reach the SFU at through a 1:1 NAT (emulated by a relay on another loopback
address)."""

from __future__ import annotations

import asyncio

import aioice.ice
import av
import pytest

from huddle.call import CallClient
from huddle.client import HuddleClient
from tests.conftest import StartNode
from tests.helpers import make_token
from tests.media import ColorTrack, close_colour, mean_rgb
from tests.netem import LossyRelay, candidate_ports

LOW, HIGH = 41000, 41199
PUBLIC = "127.0.0.3"  # the "public" side of the emulated NAT


async def test_port_range_and_announced_address(
    start_node: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The port range is process-wide (as aioice is): restore aioice afterwards.
    monkeypatch.setattr(
        aioice.ice.Connection,
        "get_component_candidates",
        aioice.ice.Connection.get_component_candidates,
    )
    node = await start_node(
        ice_addresses=["127.0.0.1"],
        ice_port_min=LOW,
        ice_port_max=HIGH,
        ice_announced_address=PUBLIC,
    )
    relays: list[LossyRelay] = []
    seen_ports: set[int] = set()

    async def through_nat(kind: str, sdp: str) -> str:
        assert "127.0.0.1" not in [
            line.split()[4] for line in sdp.splitlines() if line.startswith("a=candidate:")
        ]
        for port in candidate_ports(sdp, PUBLIC):
            seen_ports.add(port)
            if any(r.listen[1] == port for r in relays):
                continue
            relay = LossyRelay(("127.0.0.1", port), lambda _: False, listen=(PUBLIC, port))
            await relay.start()
            relays.append(relay)
        return sdp

    calls = []
    for identity in ("alice", "bob"):
        client = HuddleClient(node.url, make_token(identity))
        node.clients.append(client)
        await client.connect()
        await client.hello()
        call = CallClient(client, "nat")
        call.remote_sdp_filter = through_nat
        await call.join()
        calls.append(call)
    alice, bob = calls
    await alice.publish(ColorTrack((90, 30, 160)))
    track, _ = await bob.next_track()
    for _ in range(5):
        frame = await asyncio.wait_for(track.recv(), 10)
    assert isinstance(frame, av.VideoFrame)
    assert close_colour(mean_rgb(frame), (90, 30, 160))
    assert seen_ports and all(LOW <= port <= HIGH for port in seen_ports)
    assert all(r.forwarded > 0 for r in relays)  # media really went through the "NAT"
    for relay in relays:
        relay.close()
    await alice.close()
    await bob.close()

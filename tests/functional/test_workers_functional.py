"""SFU worker processes: rooms spread over workers, media through them, a killed worker
restarted and its participants back in the call by themselves."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import aiohttp
import av
import pytest

from huddle.call import CallClient
from sfu import ipc
from signaling.server import HUB
from tests.conftest import StartNode
from tests.helpers import Node
from tests.media import ColorTrack, close_colour, mean_rgb

# Long enough for a worker to answer a join and make its first offer.
BUSY_S = 0.5


async def _call(node: Node, identity: str, room: str) -> CallClient:
    return await node.call(identity, room)


async def _sees(call: CallClient, colour: tuple[int, int, int], frames: int = 5) -> None:
    track, _info = await call.next_track(timeout=20)
    for _ in range(frames):
        frame = await asyncio.wait_for(track.recv(), 10)
    assert isinstance(frame, av.VideoFrame)
    assert close_colour(mean_rgb(frame), colour), mean_rgb(frame)


async def _metric(node: Node, name: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"{node.url}/metrics") as resp:
        return "\n".join(line for line in (await resp.text()).splitlines() if line.startswith(name))


async def test_rooms_on_workers_and_worker_restart(start_node: StartNode) -> None:
    node = await start_node(ice_addresses=["127.0.0.1"], sfu_workers=2)
    calls = node.app[HUB].calls
    assert calls.pool is not None
    red_pub = await _call(node, "alice", "red")
    red_sub = await _call(node, "bob", "red")
    blue_pub = await _call(node, "carol", "blue")
    blue_sub = await _call(node, "dave", "blue")
    red_worker = calls.rooms["red"].host
    blue_worker = calls.rooms["blue"].host
    assert red_worker is not blue_worker  # the second room went to the idle worker
    pids = {red_worker.pid, blue_worker.pid}  # type: ignore[attr-defined]
    assert os.getpid() not in pids and len(pids) == 2

    await red_pub.publish(ColorTrack((220, 30, 30)))
    await blue_pub.publish(ColorTrack((30, 30, 220)))
    await _sees(red_sub, (220, 30, 30))
    await _sees(blue_sub, (30, 30, 220))
    await asyncio.sleep(1.2)  # workers report their counters every second
    assert await _metric(node, "huddle_sfu_decoders_created") == "huddle_sfu_decoders_created 0.0"
    per_worker = await _metric(node, "huddle_sfu_worker_participants")
    assert per_worker.count(" 2.0") == 2, per_worker

    # Kill the red room's worker: it is restarted, and its participants rejoin by themselves.
    killed = red_worker.pid  # type: ignore[attr-defined]
    os.kill(killed, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while red_pub.rejoins < 1 or red_sub.rejoins < 1 or calls.pool.restarts < 1:
        assert time.monotonic() < deadline, (red_pub.rejoins, red_sub.rejoins)
        await asyncio.sleep(0.05)
    assert calls.pool.restarts == 1
    assert killed not in {w.pid for w in calls.pool.workers if w is not None}
    await _sees(red_sub, (220, 30, 30))
    # The other room never noticed.
    assert blue_sub.rejoins == 0 and blue_pub.rejoins == 0
    assert calls.rooms["blue"].host is blue_worker
    for call in (red_pub, red_sub, blue_pub, blue_sub):
        await call.close()


async def test_workers_are_set_up_as_the_node(
    start_node: StartNode, capfd: pytest.CaptureFixture[str]
) -> None:
    """Workers run the node's worker program: their log lines are the node's JSON objects."""
    node = await start_node(ice_addresses=["127.0.0.1"], sfu_workers=1)
    pool = node.app[HUB].calls.pool
    assert pool is not None and pool.module == "huddle.sfu_worker"
    worker = pool.workers[0]
    assert worker is not None
    err = ""
    deadline = time.monotonic() + 20
    while "sfu worker ready" not in err:
        assert time.monotonic() < deadline, err
        await asyncio.sleep(0.05)
        err += capfd.readouterr().err
    line = next(line for line in err.splitlines() if "sfu worker ready" in line)
    record = json.loads(line)
    assert record["level"] == "info" and record["logger"] == "huddle.sfu.worker"
    assert record["msg"] == "sfu worker ready" and record["ts"].endswith("Z")
    assert record["index"] == 0 and record["pid"] == worker.pid


async def test_a_joiner_gets_its_first_offer_when_the_node_reads_it_with_the_join_reply(
    start_node: StartNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy node can read the worker's join reply and its first offer to the joiner in one
    go, before the join is registered: the offer must still reach the joiner (the worker
    offers it nothing more until that one is answered)."""
    node = await start_node(ice_addresses=["127.0.0.1"], sfu_workers=1)
    alice = await _call(node, "alice", "busy")
    await alice.publish(ColorTrack((220, 40, 40)))

    real_call = ipc.NodeChannel.call

    async def busy_call(self: ipc.NodeChannel, message: ipc.Request, timeout: float = 20.0) -> Any:
        task = asyncio.ensure_future(real_call(self, message, timeout))
        if isinstance(message, ipc.Join):
            await asyncio.sleep(0)  # the request is written
            # The node is busy meanwhile: the reply and the offer wait in the pipe together.
            time.sleep(BUSY_S)  # noqa: ASYNC251 - blocking the loop is the point
        return await task

    monkeypatch.setattr(ipc.NodeChannel, "call", busy_call)
    bob = await _call(node, "bob", "busy")
    await _sees(bob, (220, 40, 40))
    await alice.close()
    await bob.close()

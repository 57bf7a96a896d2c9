"""The naive baseline: the relay a Python user would write by hand with aiortc's MediaRelay.

    python -m benchmarks.sfu_naive --port 8090 --ice-address 127.0.0.1

Each publisher's tracks are received (and so decoded) once; each subscriber gets a
``MediaRelay`` proxy of them on its own peer connection, so every subscriber's copy is
encoded again by its own sender. Plain asyncio, plain aiohttp, plain JSON over HTTP:

- ``POST /publish {"sdp"}`` -> ``{"id", "sdp"}``: answer a publisher's offer;
- ``POST /subscribe {"feeds": [id, ...]}`` -> ``{"id", "sdp"}``: an offer with those feeds;
- ``POST /answer {"id", "sdp"}``: the subscriber's answer;
- ``POST /close {"id"}``; ``GET /healthz``.

Loopback only, started and stopped by ``benchmarks.sfu_load``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets

from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay

from benchmarks.procs import serve_until_signal
from sfu.aiortc_glue import use_host_addresses


class NaiveRelay:
    def __init__(self) -> None:
        self.relay = MediaRelay()
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.tracks: dict[str, list[MediaStreamTrack]] = {}

    async def publish(self, request: web.Request) -> web.Response:
        body = await request.json()
        pc = RTCPeerConnection()
        feed = f"f{secrets.token_hex(4)}"
        tracks: list[MediaStreamTrack] = []
        pc.on("track", tracks.append)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        self.pcs[feed] = pc
        self.tracks[feed] = tracks
        return web.json_response({"id": feed, "sdp": pc.localDescription.sdp})

    async def subscribe(self, request: web.Request) -> web.Response:
        body = await request.json()
        # aiortc's default "balanced" policy leaves the second and later tracks of a kind,
        # when several are offered at once, on a transport that never connects.
        pc = RTCPeerConnection(RTCConfiguration(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        for feed in body["feeds"]:
            for track in self.tracks.get(feed, []):
                # Unbuffered: a slow encoder skips frames instead of queueing them forever.
                pc.addTrack(self.relay.subscribe(track, buffered=False))
        name = f"s{secrets.token_hex(4)}"
        self.pcs[name] = pc
        await pc.setLocalDescription(await pc.createOffer())
        return web.json_response({"id": name, "sdp": pc.localDescription.sdp})

    async def answer(self, request: web.Request) -> web.Response:
        body = await request.json()
        pc = self.pcs.get(body["id"])
        if pc is None:
            raise web.HTTPNotFound()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="answer"))
        return web.json_response({})

    async def close(self, request: web.Request) -> web.Response:
        body = await request.json()
        pc = self.pcs.pop(body["id"], None)
        self.tracks.pop(body["id"], None)
        if pc is not None:
            await pc.close()
        return web.json_response({})

    async def close_all(self) -> None:
        for pc in list(self.pcs.values()):
            with contextlib.suppress(Exception):
                await pc.close()
        self.pcs.clear()


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def serve(port: int) -> None:
    relay = NaiveRelay()
    app = web.Application()
    app.router.add_post("/publish", relay.publish)
    app.router.add_post("/subscribe", relay.subscribe)
    app.router.add_post("/answer", relay.answer)
    app.router.add_post("/close", relay.close)
    app.router.add_get("/healthz", _healthz)
    await serve_until_signal(app, port, on_stop=relay.close_all)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sfu_naive", description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--ice-address", default="127.0.0.1")
    args = ap.parse_args(argv)
    use_host_addresses([args.ice_address])
    asyncio.run(serve(args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

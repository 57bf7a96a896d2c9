"""A Chromium publisher behind a capped uplink, and a Chromium subscriber; print JSON.

Run where the publisher's uplink is the capped link (the test runs it on the host side of
the namespace's veth, whose host-to-namespace direction it caps with ``tc tbf``):

    python -m tests.browser.uplink_driver --base-url http://10.213.0.2:8080 --room R \\
        --publisher-token T1 --subscriber-token T2 --profile-dir DIR --out result.json

The publisher page publishes its fake camera (three simulcast layers; ``--camera-file``: a
clip of the test's own) and microphone; the subscriber page joins. Once the subscriber
receives, the script waits ``--settle-s``, then takes ``getStats()`` of the publisher's and
the subscriber's connections ``--sample-s`` apart, and writes both snapshots, the
publisher's negotiated SDP and a screenshot. It asserts
nothing: the test does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from playwright.async_api import async_playwright

from benchmarks.common import CHROMIUM
from tests.browser.driver import (
    CALL_CHROMIUM_ARGS,
    _first_page,
    _page_url,
    _stats,
    _wait_receiving,
    _wait_state,
)

SDP_JS = "() => window.huddle.publisherPc.remoteDescription.sdp"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": False, "timings": {}}
    origin = args.base_url.rstrip("/")
    started = time.monotonic()
    deadline = started + args.timeout_s
    async with async_playwright() as playwright:
        contexts = []
        try:
            pages = {}
            for name in ("publisher", "subscriber"):
                camera = []
                if name == "publisher" and args.camera_file:
                    camera = [f"--use-file-for-fake-video-capture={args.camera_file}"]
                context = await playwright.chromium.launch_persistent_context(
                    args.profile_dir / name,
                    executable_path=CHROMIUM,
                    headless=True,
                    args=[
                        *CALL_CHROMIUM_ARGS,
                        *camera,
                        f"--unsafely-treat-insecure-origin-as-secure={origin}",
                    ],
                    viewport={"width": 1280, "height": 720},
                )
                contexts.append(context)
                pages[name] = await _first_page(context)
            publisher, subscriber = pages["publisher"], pages["subscriber"]
            await publisher.goto(_page_url(args, args.publisher_token, publish=True))
            await _wait_state(publisher, "published", deadline)
            await subscriber.goto(_page_url(args, args.subscriber_token, publish=False))
            await _wait_receiving(subscriber, deadline, "in time")
            out["timings"]["first_media_s"] = round(time.monotonic() - started, 2)
            out["answer_sdp"] = await publisher.evaluate(SDP_JS)
            await asyncio.sleep(args.settle_s)
            snapshots: dict[str, list[Any]] = {"publisher": [], "subscriber": []}
            for i in range(2):
                if i:
                    await asyncio.sleep(args.sample_s)
                snapshots["publisher"].append(await _stats(publisher, "publisherPc"))
                snapshots["subscriber"].append(await _stats(subscriber, "subscriberPc"))
            out["publisher_stats"] = snapshots["publisher"]
            out["subscriber_stats"] = snapshots["subscriber"]
            await subscriber.screenshot(path=args.screenshot)
            out["ok"] = True
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            for context in contexts:
                await context.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--room", required=True)
    parser.add_argument("--publisher-token", required=True)
    parser.add_argument("--subscriber-token", required=True)
    parser.add_argument("--screenshot", type=Path, required=True)
    parser.add_argument("--profile-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--camera-file", type=Path, help="a .y4m clip the publisher's camera loops")
    parser.add_argument("--timeout-s", type=float, default=40.0)
    parser.add_argument("--settle-s", type=float, default=10.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    args = parser.parse_args()
    args.relay = False
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

"""A two-user call in the web app where one shares her screen and the other's downlink is
then capped; write what each page saw as JSON.

Run on the host side of the namespace's veth, as root (it sets the cap itself):

    python -m tests.browser.screen_driver --base-url http://10.213.0.2:8080 \\
        --netns NS --dev IFACE --cap-kbit 400 --shots DIR --out result.json

alice and bob sign in, alice makes a group of the two, both join its call, and alice shares
her screen (the SDK publishes it as three layers at full resolution, fewer frames a second in
the lower ones). bob's decoding of the screen is sampled (frames, height, and at each poll the
layer the SFU sends him) on a free link, then with his downlink capped (congestion_driver's
HTB class on the UDP port of his subscriber connection), then again after the cap is lifted,
once the SFU sends him the screen's top layer again (how long after the lift it first did:
``back_s``); with each, what the SFU says it sends him (call.stats), and how many frames a
second alice's browser encoded of each layer meanwhile: where frames went missing, if any did.

The free link's sample starts once alice's browser gives the screen's top layer its
encoding's ceiling (her uplink's estimate ramps up from the start of the call; until then that
layer's encoder drops frames of its own), then once the SFU has sent bob that layer for
``--hold-s`` on end (one poll that saw it used to be enough, and a sample so begun could
count a lower layer's frames, or a switch's, as the top one's) and lasts ``--free-sample-s``.
It asserts nothing: the test does.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any, Final

from playwright.async_api import Page

from tests.browser.app_call_driver import Run
from tests.browser.congestion_driver import (
    SUBSCRIBER_PORT_JS,
    cap,
    capped_run_parser,
    lift,
    run_and_write,
)

# bob's decoding of alice's screen: frames decoded and their size, by the screen's track.
SCREEN_JS: Final = """
async () => {
  const call = window.huddleCalls.session().call;
  let out = null;
  (await call.subscriberPc.getStats()).forEach((s) => {
    const info = s.type === "inbound-rtp" && s.kind === "video" && call.tracks[s.mid];
    if (info && info.source === "screen") {
      out = { frames: s.framesDecoded || 0, height: s.frameHeight || 0, width: s.frameWidth || 0,
              track: info.track, received: s.framesReceived || 0, dropped: s.framesDropped || 0,
              freezes: s.freezeCount || 0, frozen_s: s.totalFreezesDuration || 0,
              key_frames: s.keyFramesDecoded || 0 };
    }
  });
  return out ? { t: performance.now(), ...out } : null;
}
"""

# alice's encoding of each layer of her screen: frames encoded, and what limits it.
ENCODED_JS: Final = """
async () => {
  const call = window.huddleCalls.session().call;
  const out = {};
  (await call.publisherPc.getStats()).forEach((s) => {
    const info = s.type === "outbound-rtp" && s.kind === "video" && call.senders.get(s.mid);
    if (info && info.source === "screen") {
      out[info.layer] = { frames: s.framesEncoded || 0, target_bps: s.targetBitrate || 0,
                          max_bps: info.encoding.maxBitrate,
                          limited_by: s.qualityLimitationReason || null };
    }
  });
  return { t: performance.now(), layers: out };
}
"""

# The share of its encoding's maxBitrate alice's browser gives the screen's top layer once her
# uplink no longer holds it back (2.5 Mbit/s of 2.5 when measured on a free link).
UPLINK_FULL: Final = 0.9

# What alice shares, as her browser captures it.
SHARED_JS: Final = """
() => {
  const stream = window.huddleCalls.session().call.screenStream;
  const track = stream && stream.getVideoTracks()[0];
  return track ? track.getSettings() : null;
}
"""

# The SFU's view of what it sends bob of the screen.
SERVER_SCREEN_JS: Final = """
async () => {
  const call = window.huddleCalls.session().call;
  const stats = await call.stats();
  return stats.server.subscribed.filter((s) => s.kind === "video").map((s) => ({
    track: s.track, layer: s.layer, height: s.height, paused: s.downlink_paused,
    downlink_bps: s.downlink_bps, estimate_bps: s.estimate_bps, probes: s.probes,
    fraction_lost: s.fraction_lost, bitrate_bps: s.bitrate_bps }));
}
"""


def _track(sent: list[dict[str, Any]], track: str) -> dict[str, Any] | None:
    """Alice's ``track`` (screen, cam) in what SERVER_SCREEN_JS gave; None when not sent."""
    return next((s for s in sent if s["track"].endswith(":" + track)), None)


def _layer_of(sent: list[dict[str, Any]], track: str = "screen") -> int | None:
    """The layer of alice's ``track`` in what SERVER_SCREEN_JS gave; None for one paused or
    not sent."""
    mine = _track(sent, track)
    return None if mine is None or mine["paused"] else mine["layer"]


async def _screen_layer(page: Page) -> int | None:
    """The layer of alice's screen the SFU sends bob now."""
    return _layer_of(await page.evaluate(SERVER_SCREEN_JS))


def _rate(start: dict[str, Any], end: dict[str, Any], count: str) -> float:
    frames: float = end[count] - start[count]
    seconds: float = (end["t"] - start["t"]) / 1000
    return round(frames / seconds, 2)


async def _sample(page: Page, alice: Page, seconds: float) -> dict[str, Any]:
    """Frames a second and the heights bob decoded alice's screen at over ``seconds``, the
    layer the SFU sent him at each poll, and what alice encoded of each layer meanwhile."""
    encoded = await alice.evaluate(ENCODED_JS)
    start = await page.evaluate(SCREEN_JS)
    heights = set()
    layers = []
    end = start
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        end = await page.evaluate(SCREEN_JS)
        layers.append(await _screen_layer(page))
        if end and end["height"]:
            heights.add(end["height"])
    encoded_end = await alice.evaluate(ENCODED_JS)
    sent = {}
    for layer, seen in encoded_end["layers"].items():
        first = {"t": encoded["t"], **encoded["layers"].get(layer, {"frames": 0})}
        sent[layer] = {**seen, "fps": _rate(first, {"t": encoded_end["t"], **seen}, "frames")}
    return {
        "fps": _rate(start, end, "frames"),
        "heights": sorted(heights),
        "layers": layers,
        "decoding": {
            "received_fps": _rate(start, end, "received"),
            "dropped": end["dropped"] - start["dropped"],
            "freezes": end["freezes"] - start["freezes"],
            "frozen_s": round(end["frozen_s"] - start["frozen_s"], 2),
            "key_frames": end["key_frames"] - start["key_frames"],
        },
        "encoded": sent,
        "server": await page.evaluate(SERVER_SCREEN_JS),
    }


async def scenario(run: Run, args: argparse.Namespace) -> None:
    alice = await run.page("alice", "alice")
    bob = await run.page("bob", "bob")
    await alice.click("#new-group")
    await alice.fill("#group-name", "Slides")
    await alice.fill("#group-members", "bob")
    await alice.click("#group-form button[type=submit]")
    await alice.wait_for_selector("#call-start")
    await run.open(bob, "Slides")
    for page in (alice, bob):
        await page.click("#call-start")
    await run.decoding(bob, "bob", ["alice"])
    await alice.click("#call-screen")

    async def screen_shown() -> dict[str, Any] | None:
        seen: dict[str, Any] | None = await bob.evaluate(SCREEN_JS)
        return seen if seen and seen["frames"] > 10 else None

    await run.until("bob decodes alice's screen", screen_shown)

    async def uplink_full() -> dict[str, Any] | None:
        """alice's encoder of the screen's top layer, once her browser gives it its ceiling."""
        top = (await alice.evaluate(ENCODED_JS))["layers"].get("2")
        full = top and top["target_bps"] >= UPLINK_FULL * top["max_bps"]
        return top if full else None

    # alice's own estimate of her uplink starts low and probes up (from the SFU's REMB); until
    # it has room for the top layer, that layer's encoder drops frames (seen on a busy
    # two-core machine: 168 kbit/s and 10 frames a second for a 20-frame capture), which would
    # be her uplink's doing, not bob's downlink's.
    began = time.monotonic()
    await run.until("alice's browser gives her screen's top layer its ceiling", uplink_full)
    uplink_s = round(time.monotonic() - began, 2)

    top_since: float | None = None

    def hold_top(layer: int | None) -> float | None:
        """How long the SFU has sent bob the screen's top layer, once that is ``hold_s``
        (``layer``: the screen's now)."""
        nonlocal top_since
        now = time.monotonic()
        if layer != 2:
            top_since = None
        elif top_since is None:
            top_since = now
        held = 0.0 if top_since is None else now - top_since
        return round(held, 2) if held >= args.hold_s else None

    async def top_held() -> float | None:
        return hold_top(await _screen_layer(bob))

    # The free link's figures are taken once the SFU has sent the screen's top layer for a
    # while (its estimate starts at 1 Mbit/s, below a camera and a screen at their best, and
    # probes up; alice's encoders start with the share).
    held = await run.until("the SFU sends bob the screen's top layer on end", top_held)
    shared = await alice.evaluate(SHARED_JS)
    free = await _sample(bob, alice, args.free_sample_s)
    run.step("free", shared=shared, uplink_s=uplink_s, top_held_s=held, **free)

    port = await bob.evaluate(SUBSCRIBER_PORT_JS)
    cap(args.netns, args.dev, int(port["port"]), args.cap_kbit)
    await asyncio.sleep(args.cap_settle_s)
    capped = await _sample(bob, alice, args.sample_s)
    run.step("capped", port=port, shot=await run.shot(bob, "bob-screen-capped"), **capped)

    # The link free again: the SFU's estimate of bob's downlink grows back (padding probes),
    # the screen's layers rise one step at a time; the sample begins once the SFU has sent
    # him the top layer for ``hold_s`` on end, and ``back_s`` is how long after the lift it
    # first sent it (a fixed wait here once caught the screen a layer short, 11 s after);
    # ``back`` is how it came back, poll by poll: [s since the lift, the screen's layer, the
    # camera's (None: paused), the SFU's estimate of bob's downlink and what it allocates by
    # (the estimate under any cap loss set), in kbit/s, its probes so far].
    lift(args.netns, args.dev)
    lifted_at = time.monotonic()
    back_at: float | None = None
    back: list[list[Any]] = []
    top_since = None

    async def top_back() -> float | None:
        nonlocal back_at
        sent = await bob.evaluate(SERVER_SCREEN_JS)
        screen = _track(sent, "screen") or {}
        t = round(time.monotonic() - lifted_at, 2)
        kbit = [
            None if (bps := screen.get(k)) is None else round(bps / 1000)
            for k in ("estimate_bps", "downlink_bps")
        ]
        layer = _layer_of(sent)
        back.append([t, layer, _layer_of(sent, "cam"), *kbit, screen.get("probes")])
        held = hold_top(layer)
        if top_since is not None and back_at is None:
            back_at = top_since
        return held

    try:
        await run.until("the SFU sends bob the screen's top layer again", top_back)
    finally:
        run.step("back", rows=back)
    back_s = round((back_at or lifted_at) - lifted_at, 2)
    lifted = await _sample(bob, alice, args.sample_s)
    run.step("lifted", back_s=back_s, shot=await run.shot(bob, "bob-screen-lifted"), **lifted)


def main() -> None:
    parser = capped_run_parser(__doc__, cap_kbit=400)
    parser.add_argument("--cap-settle-s", type=float, default=6.0)
    parser.add_argument("--sample-s", type=float, default=5.0)
    parser.add_argument("--hold-s", type=float, default=3.0)
    parser.add_argument("--free-sample-s", type=float, default=8.0)
    run_and_write(parser.parse_args(), scenario)


if __name__ == "__main__":
    main()

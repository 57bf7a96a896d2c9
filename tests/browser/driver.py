"""Drive a call between two headless Chromium pages through a Huddle node; print JSON.

Run inside the test's network namespace (Playwright starts Chromium as its own child, so the
browser lives wherever this script does):

    ip netns exec NS python -m tests.browser.driver --base-url http://10.213.0.2:8080 \
        --room R --publisher-token T1 --subscriber-token T2 --out result.json ...

The publisher page opens ``/web/call.html?publish=1`` and sends its fake camera and
microphone; the subscriber page joins the same room. The script waits until the subscriber
decodes video and receives audio, takes two ``getStats()`` snapshots ``--sample-s`` apart
and a screenshot, and writes everything to ``--out``. It asserts nothing: the test does.

With ``--simulcast`` (the page publishes its camera as three layers by default) the script
then reads ``call.stats`` on both pages, asks the SFU for the smallest layer
(``sfu.track_settings`` with the lowest declared height) and waits until the subscriber decodes
that size.

With ``--controls`` the publisher then mutes its microphone and shares its screen with the
page's buttons, and the script waits until the subscriber decodes the screen; then the
publisher switches its camera (``switchDevice``) and the subscriber must go on decoding it;
then sharing stops and the subscriber's screen tile must go away.

With ``--participant-token`` given once per participant (instead of the publisher and
subscriber tokens) every page publishes and subscribes: the script waits until each page
decodes video and receives audio from every other participant, takes two snapshots per page
and a screenshot of each (``--screenshot`` with ``-1``, ``-2``, ... before its suffix).

With ``--relay`` the pages open with ``relay=1``: their peer connections use TURN only.

With ``--restart`` both pages then start their media over (``huddle.restartMedia()``, what a
failed connection triggers): first the publisher, until the subscriber decodes its new video
track, then the subscriber, until its new connection decodes; two more snapshots follow.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from playwright.async_api import BrowserContext, ConsoleMessage, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

from benchmarks.common import CHROMIUM, CHROMIUM_ARGS, CHROMIUM_FAKE_MEDIA_ARGS

# The calls' pages also run headless without QUIC, with fake media devices, and play media
# without a user's gesture.
CALL_CHROMIUM_ARGS: Final = (
    *CHROMIUM_ARGS,
    "--headless",
    "--disable-quic",
    *CHROMIUM_FAKE_MEDIA_ARGS,
    "--autoplay-policy=no-user-gesture-required",
)
POLL_S: Final = 0.25
NAVIGATION_ATTEMPTS: Final = 3
NAVIGATION_RETRY_S: Final = 0.5

STATS_JS: Final = """
async (which) => {
  const pc = window.huddle && window.huddle[which];
  if (!pc) return null;
  const wanted = ["inbound-rtp", "outbound-rtp", "candidate-pair", "local-candidate",
                  "remote-candidate", "codec", "transport"];
  const out = [];
  (await pc.getStats()).forEach((s) => { if (wanted.includes(s.type)) out.push(s); });
  return JSON.parse(JSON.stringify(out));
}
"""

STATE_JS: Final = """
() => {
  const h = window.huddle;
  if (!h) return {state: "no window.huddle"};
  const video = document.querySelector(".tile:not(.local) video");
  const candidates = (pc) => pc && pc.localDescription
    ? pc.localDescription.sdp.split(/\\r?\\n/).filter((l) => l.startsWith("a=candidate:")) : [];
  return {
    state: h.state, error: h.error, participant: h.participant,
    offersAnswered: h.offersAnswered, restarts: h.restarts, log: h.log.slice(-40),
    publisher: h.publisherPc && h.publisherPc.connectionState,
    subscriber: h.subscriberPc && h.subscriberPc.connectionState,
    // The SFU's ICE username fragment: new for each of its connections.
    subscriberUfrag: h.subscriberPc && h.subscriberPc.remoteDescription
      ? (/^a=ice-ufrag:(\\S+)/m.exec(h.subscriberPc.remoteDescription.sdp) || [])[1] : null,
    remoteVideoWidth: video ? video.videoWidth : 0,
    sentCandidates: [...candidates(h.publisherPc), ...candidates(h.subscriberPc)],
  };
}
"""


def _receiving(stats: list[dict[str, Any]] | None, old_mids: frozenset[str] = frozenset()) -> bool:
    """Video decoded and audio received on the subscriber connection (on other sections than
    ``old_mids``)."""
    frames = packets = 0
    for s in stats or []:
        if s.get("mid") in old_mids:
            continue
        if s.get("type") == "inbound-rtp" and s.get("kind") == "video":
            frames += int(s.get("framesDecoded", 0))
        if s.get("type") == "inbound-rtp" and s.get("kind") == "audio":
            packets += int(s.get("packetsReceived", 0))
    return frames > 0 and packets > 0


async def _stats(page: Page, which: str) -> list[dict[str, Any]] | None:
    result: list[dict[str, Any]] | None = await page.evaluate(STATS_JS, which)
    return result


async def _state(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = await page.evaluate(STATE_JS)
    return result


async def _wait_receiving(
    page: Page, deadline: float, what: str, old_mids: frozenset[str] = frozenset()
) -> None:
    while not _receiving(await _stats(page, "subscriberPc"), old_mids):
        state = await _state(page)
        if state["state"] == "failed":
            raise RuntimeError(f"subscriber page failed: {state['error']}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"subscriber decoded no video or received no audio {what}")
        await asyncio.sleep(POLL_S)


async def _restart(page: Page) -> None:
    await page.evaluate("() => window.huddle.restartMedia('asked by the test driver')")


async def _restarts(
    pages: dict[str, Page], args: argparse.Namespace, out: dict[str, Any], deadline: float
) -> None:
    """Both pages start their media over, one after the other."""
    publisher, subscriber = pages["publisher"], pages["subscriber"]
    started = time.monotonic()
    out["before_restart_state"] = {name: await _state(page) for name, page in pages.items()}
    old_mids = frozenset(
        s["mid"] for s in await _stats(subscriber, "subscriberPc") or [] if "mid" in s
    )
    # The publisher's tracks come again on new sections of the subscriber's connection.
    await _restart(publisher)
    await _wait_receiving(subscriber, deadline, "after the publisher's restart", old_mids)
    out["timings"]["publisher_restart_s"] = round(time.monotonic() - started, 2)
    out["after_publisher_restart_stats"] = await _stats(subscriber, "subscriberPc")
    # The subscriber's new connection is offered the publisher's tracks and decodes them.
    started = time.monotonic()
    await _restart(subscriber)
    await _wait_receiving(subscriber, deadline, "after the subscriber's restart")
    out["timings"]["subscriber_restart_s"] = round(time.monotonic() - started, 2)
    out["restart_stats"] = [await _stats(subscriber, "subscriberPc")]
    await asyncio.sleep(args.sample_s)
    out["restart_stats"].append(await _stats(subscriber, "subscriberPc"))


SERVER_STATS_JS: Final = "async () => (await window.huddle.call.stats()).server"

SWITCH_CAMERA_JS: Final = """
async () => {
  const call = window.huddle.call;
  const camera = () => [...call.senders].filter(([, s]) => s.source === "camera")
    .map(([mid, s]) => [mid, s.track.id]);
  const before = camera();
  const devices = await navigator.mediaDevices.enumerateDevices();
  const input = devices.find((d) => d.kind === "videoinput");
  await call.switchDevice("video", input.deviceId);
  return {before, after: camera()};
}
"""

SIMULCAST_JS: Final = """
() => {
  const call = window.huddle.call;
  return {layers: call.layers, pausedLayers: [...call.pausedLayers],
          tracks: Object.values(call.tracks)};
}
"""


def _inbound_video_height(stats: list[dict[str, Any]] | None) -> int:
    heights = [
        int(s.get("frameHeight", 0))
        for s in stats or []
        if s.get("type") == "inbound-rtp" and s.get("kind") == "video"
    ]
    return max(heights, default=0)


async def _simulcast(pages: dict[str, Page], out: dict[str, Any], deadline: float) -> None:
    """What the SFU sees of the publisher's layers, then the subscriber asks for the smallest."""
    publisher, subscriber = pages["publisher"], pages["subscriber"]
    layers = (await publisher.evaluate(SIMULCAST_JS))["layers"]
    smallest = min(layer["height"] for layer in layers.values())
    # The SFU starts from what the subscriber's estimate allows: first see a larger layer.
    while _inbound_video_height(await _stats(subscriber, "subscriberPc")) <= smallest:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the subscriber never decoded a layer above {smallest}p")
        await asyncio.sleep(POLL_S)
    out["simulcast"] = {
        "publisher": await publisher.evaluate(SIMULCAST_JS),
        "subscriber": await subscriber.evaluate(SIMULCAST_JS),
        "publisher_server_stats": await publisher.evaluate(SERVER_STATS_JS),
        "subscriber_server_stats": await subscriber.evaluate(SERVER_STATS_JS),
        "height_before": _inbound_video_height(await _stats(subscriber, "subscriberPc")),
    }
    [video] = [t for t in out["simulcast"]["subscriber"]["tracks"] if t["kind"] == "video"]
    await subscriber.evaluate(
        "([track, height]) => window.huddle.call.setTileHeight(track, height)",
        [video["track"], smallest],
    )
    while _inbound_video_height(await _stats(subscriber, "subscriberPc")) > smallest:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the subscriber never decoded the {smallest}p layer")
        await asyncio.sleep(POLL_S)
    out["simulcast"]["height_after"] = _inbound_video_height(
        await _stats(subscriber, "subscriberPc")
    )
    out["simulcast"]["subscriber_server_stats_after"] = await subscriber.evaluate(SERVER_STATS_JS)


async def _controls(pages: dict[str, Page], out: dict[str, Any], deadline: float) -> None:
    """The publisher mutes its microphone and shares its screen with the page's buttons; the
    subscriber sees the new state and decodes the screen on a tile of its own."""
    publisher, subscriber = pages["publisher"], pages["subscriber"]
    timeout_ms = max(1.0, deadline - time.monotonic()) * 1000
    await publisher.click("#mute-mic")
    await publisher.click("#share-screen")
    await subscriber.wait_for_function(
        "() => { const v = document.querySelector('.tile.screen video');"
        " return v && v.videoWidth > 0; }",
        timeout=timeout_ms,
    )
    await subscriber.wait_for_function(
        "() => [...window.huddle.call.participants.values()]"
        ".some((p) => p.audio_muted && p.screen_sharing)",
        timeout=timeout_ms,
    )
    out["controls"] = {
        "publisher_buttons": await publisher.evaluate(
            "() => [...document.querySelectorAll('#controls button')]"
            ".map((b) => [b.id, b.getAttribute('aria-pressed'), b.textContent])"
        ),
        "subscriber_tracks": await subscriber.evaluate(SIMULCAST_JS),
        "publisher_audio_enabled": await publisher.evaluate(
            "() => window.huddle.call.localStream.getAudioTracks().map((t) => t.enabled)"
        ),
    }
    await subscriber.screenshot(path=str(Path(out["screenshot_dir"]) / "screen-share.png"))

    # Switching the camera: new tracks on the same sections, no new offer; the subscriber
    # goes on decoding the camera.
    [camera] = [
        t for t in out["controls"]["subscriber_tracks"]["tracks"] if t["source"] == "camera"
    ]
    decoded_before = _frames_decoded(await _stats(subscriber, "subscriberPc"), camera["mid"])
    out["controls"]["offers_before_switch"] = (await _state(subscriber))["offersAnswered"]
    out["controls"]["switch"] = await publisher.evaluate(SWITCH_CAMERA_JS)
    while (
        _frames_decoded(await _stats(subscriber, "subscriberPc"), camera["mid"])
        < decoded_before + 10
    ):
        if time.monotonic() > deadline:
            raise TimeoutError("the subscriber stopped decoding the camera after the switch")
        await asyncio.sleep(POLL_S)
    out["controls"]["offers_after_switch"] = (await _state(subscriber))["offersAnswered"]

    # Sharing stops: the screen's section goes inactive and its tile goes away.
    await publisher.click("#share-screen")
    await subscriber.wait_for_function(
        "() => !document.querySelector('.tile.screen')"
        " && !Object.values(window.huddle.call.tracks).some((t) => t.source === 'screen')"
        " && ![...window.huddle.call.participants.values()].some((p) => p.screen_sharing)",
        timeout=max(1.0, deadline - time.monotonic()) * 1000,
    )
    out["controls"]["after_stop"] = {
        "subscriber_tracks": await subscriber.evaluate(SIMULCAST_JS),
        "publisher_sharing": await publisher.evaluate("() => window.huddle.call.screenStream"),
    }


def _frames_decoded(stats: list[dict[str, Any]] | None, mid: str) -> int:
    return sum(
        int(s.get("framesDecoded", 0))
        for s in stats or []
        if s.get("type") == "inbound-rtp" and s.get("mid") == mid
    )


async def _wait_state(page: Page, wanted: str, deadline: float) -> None:
    while True:
        state = await _state(page)
        if state["state"] == wanted:
            return
        if state["state"] == "failed":
            raise RuntimeError(f"page failed before {wanted!r}: {state['error']}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"page not {wanted!r} in time (state {state['state']!r})")
        await asyncio.sleep(POLL_S)


def _page_url(args: argparse.Namespace, token: str, publish: bool) -> str:
    query = {"room": args.room, "token": token}
    if publish:
        query["publish"] = "1"
    if args.relay:
        query["relay"] = "1"
    return f"{args.base_url}/web/call.html?{urlencode(query)}"


async def _call(
    args: argparse.Namespace, browsers: dict[str, BrowserContext], out: dict[str, Any]
) -> None:
    started = time.monotonic()
    deadline = started + args.timeout_s
    consoles: dict[str, list[str]] = {"publisher": [], "subscriber": []}
    out["console"] = consoles
    pages: dict[str, Page] = {}

    def watch(name: str, page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            consoles[name].append(f"{message.type}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: consoles[name].append(f"pageerror: {error}"))
        pages[name] = page

    try:
        publisher = await _first_page(browsers["publisher"])
        watch("publisher", publisher)
        await goto(publisher, _page_url(args, args.publisher_token, publish=True))
        await _wait_state(publisher, "published", deadline)
        out["timings"]["published_s"] = round(time.monotonic() - started, 2)

        subscriber = await _first_page(browsers["subscriber"])
        watch("subscriber", subscriber)
        await goto(subscriber, _page_url(args, args.subscriber_token, publish=False))
        await _wait_receiving(subscriber, deadline, "in time")
        out["timings"]["first_media_s"] = round(time.monotonic() - started, 2)

        out["subscriber_stats"] = [await _stats(subscriber, "subscriberPc")]
        await asyncio.sleep(args.sample_s)
        out["subscriber_stats"].append(await _stats(subscriber, "subscriberPc"))
        out["publisher_stats"] = await _stats(publisher, "publisherPc")
        # The screenshot should show a frame, not an empty tile.
        await subscriber.wait_for_function(
            "() => [...document.querySelectorAll('.tile:not(.local) video')]"
            ".some((v) => v.videoWidth > 0)",
            timeout=max(1.0, deadline - time.monotonic()) * 1000,
        )
        await subscriber.screenshot(path=args.screenshot)
        if args.simulcast:
            await _simulcast(pages, out, deadline)
        if args.controls:
            out["screenshot_dir"] = str(args.screenshot.parent)
            await _controls(pages, out, deadline)
        if args.restart:
            await _restarts(pages, args, out, deadline)
        out["timings"]["done_s"] = round(time.monotonic() - started, 2)
    finally:
        for name, page in pages.items():
            try:
                out[f"{name}_state"] = await _state(page)
            except Exception as exc:  # the page may be gone: report, don't hide the cause
                out[f"{name}_state"] = {"state": f"unreadable: {exc}"}


TRACKS_JS: Final = "() => window.huddle.call ? Object.values(window.huddle.call.tracks) : []"


def _senders_received(
    stats: list[dict[str, Any]] | None, tracks: list[dict[str, Any]]
) -> dict[str, set[str]]:
    """The participants whose video this page decoded and whose audio it received."""
    by_mid = {t["mid"]: t["participant"] for t in tracks}
    got: dict[str, set[str]] = {"video": set(), "audio": set()}
    for s in stats or []:
        sender = by_mid.get(s.get("mid", ""))
        if s.get("type") != "inbound-rtp" or sender is None:
            continue
        if s.get("kind") == "video" and s.get("framesDecoded", 0) > 0:
            got["video"].add(sender)
        if s.get("kind") == "audio" and s.get("packetsReceived", 0) > 0:
            got["audio"].add(sender)
    return got


async def _mesh_page(page: Page) -> dict[str, Any]:
    return {
        "stats": await _stats(page, "subscriberPc"),
        "publisher_stats": await _stats(page, "publisherPc"),
        "tracks": await page.evaluate(TRACKS_JS),
    }


async def _mesh(
    args: argparse.Namespace, browsers: dict[str, BrowserContext], out: dict[str, Any]
) -> None:
    """Every page publishes; each must decode every other one."""
    started = time.monotonic()
    deadline = started + args.timeout_s
    names = list(browsers)
    consoles: dict[str, list[str]] = {name: [] for name in names}
    out["console"] = consoles
    pages: dict[str, Page] = {}

    def watch(lines: list[str], page: Page) -> None:
        def on_console(message: ConsoleMessage) -> None:
            lines.append(f"{message.type}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: lines.append(f"pageerror: {error}"))

    try:
        for name, token in zip(names, args.participant_token, strict=True):
            page = pages[name] = await _first_page(browsers[name])
            watch(consoles[name], page)
            await goto(page, _page_url(args, token, publish=True))
        for page in pages.values():
            await _wait_state(page, "published", deadline)
        out["timings"]["published_s"] = round(time.monotonic() - started, 2)
        participants = {name: (await _state(page))["participant"] for name, page in pages.items()}
        for name, page in pages.items():
            others = set(participants.values()) - {participants[name]}
            while True:
                snap = await _mesh_page(page)
                got = _senders_received(snap["stats"], snap["tracks"])
                if got["video"] >= others and got["audio"] >= others:
                    break
                if (await _state(page))["state"] == "failed":
                    raise RuntimeError(f"{name} failed: {(await _state(page))['error']}")
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{name} got video from {got['video']} and audio from "
                        f"{got['audio']}, not from all of {others}"
                    )
                await asyncio.sleep(POLL_S)
        out["timings"]["first_media_s"] = round(time.monotonic() - started, 2)
        out["mesh"] = {
            name: {"participant": participants[name], "snapshots": [await _mesh_page(page)]}
            for name, page in pages.items()
        }
        await asyncio.sleep(args.sample_s)
        for name, page in pages.items():
            out["mesh"][name]["snapshots"].append(await _mesh_page(page))
        for i, (name, page) in enumerate(pages.items(), start=1):
            # The screenshot should show every other participant's frames, not empty tiles.
            await page.wait_for_function(
                "(n) => [...document.querySelectorAll('.tile:not(.local) video')]"
                ".filter((v) => v.videoWidth > 0).length >= n",
                arg=len(pages) - 1,
                timeout=max(1.0, deadline - time.monotonic()) * 1000,
            )
            shot = args.screenshot.with_name(f"{args.screenshot.stem}-{i}{args.screenshot.suffix}")
            await page.screenshot(path=str(shot))
            out["mesh"][name]["screenshot"] = str(shot)
        out["timings"]["done_s"] = round(time.monotonic() - started, 2)
    finally:
        for name, page in pages.items():
            try:
                out[f"{name}_state"] = await _state(page)
            except Exception as exc:  # the page may be gone: report, don't hide the cause
                out[f"{name}_state"] = {"state": f"unreadable: {exc}"}


async def goto(page: Page, url: str) -> None:
    """Load ``url``, again if Chromium dropped the load because the network changed: a
    namespace the test has just made is still settling (its IPv6 link-local addresses leave
    their tentative state a moment after the link comes up), and Chromium abandons a load
    under way on any such change (``net::ERR_NETWORK_CHANGED``, seen once in CI)."""
    for attempt in range(NAVIGATION_ATTEMPTS):
        try:
            await page.goto(url)
            return
        except PlaywrightError as error:
            if "ERR_NETWORK_CHANGED" not in str(error) or attempt == NAVIGATION_ATTEMPTS - 1:
                raise
            await asyncio.sleep(NAVIGATION_RETRY_S)


async def _first_page(context: BrowserContext) -> Page:
    return context.pages[0] if context.pages else await context.new_page()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Two browsers, as two devices would be: neither shares the other's profile, permissions
    (a page without camera permission hides its addresses behind mDNS names) or media stack."""
    out: dict[str, Any] = {"ok": False, "timings": {}}
    origin = args.base_url.rstrip("/")
    started = time.monotonic()
    browsers: dict[str, BrowserContext] = {}
    async with async_playwright() as playwright:
        try:
            names = (
                [f"participant{i}" for i in range(1, len(args.participant_token) + 1)]
                if args.participant_token
                else ["publisher", "subscriber"]
            )
            for name in names:
                browsers[name] = await playwright.chromium.launch_persistent_context(
                    args.profile_dir / name,
                    executable_path=CHROMIUM,
                    headless=True,
                    args=[
                        *CALL_CHROMIUM_ARGS,
                        f"--unsafely-treat-insecure-origin-as-secure={origin}",
                    ],
                    viewport={"width": 1280, "height": 720},
                )
            out["timings"]["launch_s"] = round(time.monotonic() - started, 2)
            browser = browsers[names[0]].browser
            out["browser_version"] = browser.version if browser else None
            if args.participant_token:
                await _mesh(args, browsers, out)
            else:
                await _call(args, browsers, out)
            out["ok"] = True
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            for context in browsers.values():
                await context.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base-url", required=True, help="the node, e.g. http://10.213.0.2:8080")
    parser.add_argument("--room", required=True)
    parser.add_argument("--publisher-token")
    parser.add_argument("--subscriber-token")
    parser.add_argument(
        "--participant-token",
        action="append",
        default=[],
        help="once per page of a call in which every page publishes (instead of the two above)",
    )
    parser.add_argument("--screenshot", type=Path, required=True)
    parser.add_argument(
        "--profile-dir", type=Path, required=True, help="fresh folder for the browsers' profiles"
    )
    parser.add_argument("--out", type=Path, required=True, help="where the JSON result goes")
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument(
        "--simulcast", action="store_true", help="then check the camera's simulcast layers"
    )
    parser.add_argument(
        "--controls", action="store_true", help="then mute and share the screen by the buttons"
    )
    parser.add_argument(
        "--restart", action="store_true", help="then restart both pages' media (sfu.restart)"
    )
    parser.add_argument(
        "--relay", action="store_true", help="the pages send media through TURN only (relay=1)"
    )
    args = parser.parse_args()
    if bool(args.participant_token) == bool(args.publisher_token and args.subscriber_token):
        parser.error("give --publisher-token and --subscriber-token, or --participant-token")
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

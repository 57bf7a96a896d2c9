"""A three-user call in the web app where one user's downlink is capped; write what each page
saw as JSON.

Run on the host side of the namespace's veth, as root (it sets the cap itself):

    python -m tests.browser.congestion_driver --base-url http://10.213.0.2:8080 \\
        --netns NS --dev IFACE --cap-kbit 200 --shots DIR --out result.json

alice, bob and carol sign in (each in a browser context of its own), alice makes a group of
the three, each opens it and joins its call, and each decodes both others. Then bob's
downlink is capped: on the namespace's end of the veth (``--dev`` in ``--netns``: what the
node sends towards the host, where all three pages are), an HTB class of ``--cap-kbit``
with a short queue takes the UDP packets to the port of bob's subscriber connection, and
everything else goes by uncapped. The script waits for bob's page to show a paused tile,
samples ``getStats()`` of every page over ``--sample-s``, lifts the cap and times until
bob decodes both others' video again. It asserts nothing: the test does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from playwright.async_api import Page

from tests.browser.app_call_driver import Run, drive

# A queue of a few packets at the cap, as a home router's.
QUEUE_BYTES: Final = 5000
# Frames each remote video must decode after the cap is lifted to count as back.
FRAMES_BACK: Final = 10

# Every sfu.paused the page's Call reported, with the page's clock.
LISTEN_JS: Final = """
() => {
  const call = window.huddleCalls.session().call;
  window.__paused = [];
  call.on("paused", (e) => window.__paused.push(
    { t: performance.now(), tracks: e.tracks, participants: e.participants }));
}
"""

# Per remote identity: video frames decoded and their height, audio samples and concealed
# ones; the tiles that show the paused placeholder; the paused events so far.
SEEN_JS: Final = """
async () => {
  const call = window.huddleCalls.session().call;
  const video = {};
  const audio = {};
  (await call.subscriberPc.getStats()).forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    const info = call.tracks[s.mid];
    if (!info) return;
    if (s.kind === "video") {
      video[info.identity] = { frames: s.framesDecoded || 0, height: s.frameHeight || 0 };
    } else {
      audio[info.identity] = {
        samples: s.totalSamplesReceived || 0, concealed: s.concealedSamples || 0 };
    }
  });
  const tiles = [...document.querySelectorAll(".tile:not(.local)")].map((el) => {
    const placeholder = el.querySelector(".tile-placeholder");
    return {
      key: el.dataset.key,
      paused: el.classList.contains("video-paused"),
      placeholder: placeholder && !placeholder.hidden ? placeholder.innerText : null,
      video_visible: getComputedStyle(el.querySelector("video")).visibility !== "hidden",
      quality: el.querySelector(".tile-quality").dataset.quality,
      audio_playing: !!el.querySelector("audio").srcObject && !el.querySelector("audio").paused,
    };
  });
  const paused = [...call.pausedTracks];
  return { t: performance.now(), video, audio, tiles, paused, events: window.__paused };
}
"""

# The local UDP port of the subscriber connection's selected candidate pair.
SUBSCRIBER_PORT_JS: Final = """
async () => {
  const stats = await window.huddleCalls.session().call.subscriberPc.getStats();
  let pair = null;
  stats.forEach((s) => {
    const id = s.type === "transport" && s.selectedCandidatePairId;
    if (id) pair = stats.get(id);
  });
  const local = pair && stats.get(pair.localCandidateId);
  return local ? { port: local.port, address: local.address, protocol: local.protocol } : null;
}
"""

IDENTITIES_JS: Final = """
() => Object.fromEntries([...window.huddleCalls.session().call.participants.values()]
  .map((p) => [p.participant, p.identity]))
"""

SERVER_STATS_JS: Final = """
async () => {
  const stats = await window.huddleCalls.session().call.stats();
  return stats.server.subscribed.map((s) => ({ track: s.track, kind: s.kind, layer: s.layer,
    downlink_paused: s.downlink_paused, downlink_bps: s.downlink_bps, estimator: s.estimator,
    estimate_bps: s.estimate_bps, probes: s.probes, fraction_lost: s.fraction_lost }));
}
"""


def _tc(netns: str, *args: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", netns, "tc", *args], check=True, capture_output=True, timeout=10
    )


def cap(netns: str, dev: str, port: int, kbit: int) -> None:
    """What the node sends to ``port`` goes through a class of ``kbit``; the rest does not."""
    _tc(netns, "qdisc", "replace", "dev", dev, "root", "handle", "1:", "htb", "default", "20")
    for classid, rate in (("1:10", f"{kbit}kbit"), ("1:20", "10gbit")):
        _tc(
            netns,
            "class",
            "add",
            "dev",
            dev,
            "parent",
            "1:",
            "classid",
            classid,
            "htb",
            "rate",
            rate,
            "ceil",
            rate,
        )
    _tc(netns, "qdisc", "add", "dev", dev, "parent", "1:10", "bfifo", "limit", str(QUEUE_BYTES))
    _tc(netns, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1",
        "u32", "match", "ip", "protocol", "17", "0xff", "match", "ip", "dport", str(port), "0xffff",
        "flowid", "1:10")  # fmt: skip


def lift(netns: str, dev: str) -> None:
    _tc(netns, "qdisc", "del", "dev", dev, "root")


async def _seen(page: Page) -> dict[str, Any]:
    seen: dict[str, Any] = await page.evaluate(SEEN_JS)
    return seen


async def scenario(run: Run, args: argparse.Namespace) -> None:
    alice = await run.page("alice", "alice")
    bob = await run.page("bob", "bob")
    carol = await run.page("carol", "carol")
    await alice.click("#new-group")
    await alice.fill("#group-name", "Weak link")
    await alice.fill("#group-members", "bob, carol")
    await alice.click("#group-form button[type=submit]")
    await alice.wait_for_selector("#call-start")
    pages = {"alice": alice, "bob": bob, "carol": carol}
    for page in (bob, carol):
        await run.open(page, "Weak link")
    for page in pages.values():
        await page.click("#call-start")
    for name, page in pages.items():
        await run.decoding(page, name, [o for o in pages if o != name])
    for page in pages.values():
        await page.evaluate(LISTEN_JS)
    await asyncio.sleep(args.settle_s)
    run.step("before", **{name: await _seen(page) for name, page in pages.items()})

    port = await bob.evaluate(SUBSCRIBER_PORT_JS)
    cap(args.netns, args.dev, int(port["port"]), args.cap_kbit)
    capped_at = time.monotonic()
    run.step("capped", port=port)

    async def paused_tile() -> dict[str, Any] | None:
        seen = await _seen(bob)
        return seen if any(t["placeholder"] for t in seen["tiles"]) else None

    first = await run.until("bob shows a paused tile", paused_tile)
    run.step("bob paused", after_s=round(time.monotonic() - capped_at, 2), seen=first)
    shot = await run.shot(bob, "bob-capped")
    await asyncio.sleep(args.pause_settle_s)
    start = {name: await _seen(page) for name, page in pages.items()}
    await asyncio.sleep(args.sample_s)
    end = {name: await _seen(page) for name, page in pages.items()}
    server = await bob.evaluate(SERVER_STATS_JS)
    run.step("window", start=start, end=end, bob_server=server, shot=shot)

    lift(args.netns, args.dev)
    lifted_at = time.monotonic()
    at_lift = end["bob"]["video"]

    paused_at_lift = {t["key"] for t in end["bob"]["tiles"] if t["placeholder"]}
    identity = await bob.evaluate(IDENTITIES_JS)

    def shows(seen: dict[str, Any], key: str) -> bool:
        """The tile of ``key`` has no placeholder and its video decodes again."""
        who = identity.get(key)
        tile = next((t for t in seen["tiles"] if t["key"] == key), None)
        frames = seen["video"].get(who, {}).get("frames", 0)
        return bool(tile and not tile["placeholder"]) and (
            frames >= at_lift.get(who, {}).get("frames", 0) + FRAMES_BACK
        )

    deadline = lifted_at + args.recover_timeout_s
    first_back = all_back = None
    seen = end["bob"]
    # What the SFU says of bob's downlink meanwhile, each second: why video is (not) back.
    trace: list[Any] = []
    next_trace = lifted_at
    while time.monotonic() < deadline and all_back is None:
        seen = await _seen(bob)
        back = [key for key in paused_at_lift if shows(seen, key)]
        if back and first_back is None:
            first_back = round(time.monotonic() - lifted_at, 2)
        if len(back) == len(paused_at_lift) and not seen["paused"]:
            all_back = round(time.monotonic() - lifted_at, 2)
        if time.monotonic() >= next_trace:
            next_trace += 1.0
            server = await bob.evaluate(SERVER_STATS_JS)
            trace.append([round(time.monotonic() - lifted_at, 1), server[0]["downlink_bps"],
                          server[0]["estimate_bps"], server[0]["probes"],
                          [s["fraction_lost"] for s in server],
                          [s["track"] for s in server if s["downlink_paused"]]])  # fmt: skip
        await asyncio.sleep(0.1)
    run.step(
        "lifted",
        paused_at_lift=sorted(paused_at_lift),
        first_back_s=first_back,
        all_back_s=all_back,
        seen=seen,
        trace=trace,
        shot=await run.shot(bob, "bob-recovered"),
    )


def capped_run_parser(doc: str | None, cap_kbit: int) -> argparse.ArgumentParser:
    """The options of a driver that caps one page's downlink in the node's namespace."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--netns", required=True, help="the node's namespace")
    parser.add_argument("--dev", required=True, help="its end of the veth to the host")
    parser.add_argument("--cap-kbit", type=int, default=cap_kbit)
    parser.add_argument("--settle-s", type=float, default=3.0)
    parser.add_argument("--shots", type=Path, required=True, help="folder for screenshots")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON result goes")
    return parser


def run_and_write(
    args: argparse.Namespace, scenario: Callable[[Run, argparse.Namespace], Awaitable[None]]
) -> None:
    """Run ``scenario`` in one Chromium and write its result to ``args.out``."""
    args.shots.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(drive(args.base_url, args.shots, lambda run: scenario(run, args)))
    args.out.write_text(json.dumps(result, indent=1))


def main() -> None:
    parser = capped_run_parser(__doc__, cap_kbit=200)
    parser.add_argument("--pause-settle-s", type=float, default=2.0)
    parser.add_argument("--sample-s", type=float, default=8.0)
    parser.add_argument("--recover-timeout-s", type=float, default=20.0)
    run_and_write(parser.parse_args(), scenario)


if __name__ == "__main__":
    main()

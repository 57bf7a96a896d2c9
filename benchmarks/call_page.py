"""One participant of the call quality benchmark: a headless Chromium in its own network
namespace, on the project's call page (huddle/web/call.html: publishes the fake camera as
three simulcast layers and the fake microphone, shows every other participant).

    ip netns exec NS python -m benchmarks.call_page --base-url http://10.214.7.2:8080 \
        --room R --token JWT --remotes 2 --steps DIR --out result.json --profile-dir DIR

The benchmark paces it through files in ``--steps`` (each wait bounded by ``--timeout-s``):
it launches Chromium, then waits for ``turn`` before it opens the page (so that participants
join one after the other), writes ``published`` once it publishes and ``ready`` once it
decodes video and receives audio from ``--remotes`` others, takes a snapshot (``getStats()``
of both connections and the SFU's ``call.stats``) when ``go`` appears and another when
``end`` appears, and samples the frames decoded per remote video each second until ``stop``.
Then it writes everything to ``--out``; it asserts nothing, the benchmark reads it. ``abort``
(the benchmark gave up) ends any wait: the result then holds the error and what the page saw.

Join to first frame comes from the page's own clock: an init script notes when the page
sends ``call.join`` and polls the subscriber connection until each remote video decodes a
frame.

With ``--page-url`` (and ``--page-file``, served there through Playwright's routing) it opens
another page with the same ``window.huddle`` surface instead: the Janus VideoRoom baseline,
benchmarks/call_janus.html, which starts the clock itself as it sends its join.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

from playwright.async_api import BrowserContext, Page, Route, async_playwright

from benchmarks.common import CHROMIUM
from benchmarks.procs import bounded
from tests.browser.driver import CALL_CHROMIUM_ARGS

FILE_POLL_S: Final = 0.1
SAMPLE_EVERY_S: Final = 1.0

# Before the page's scripts: when call.join leaves (page clock), then when each remote video
# (by mid) first decodes a frame.
FIRST_FRAME_JS: Final = """
(() => {
  const marks = (window.__cq = { join: null, first: {}, polls: 0 });
  const send = WebSocket.prototype.send;
  const poll = async () => {
    const pc = window.huddle && window.huddle.subscriberPc;
    if (pc) {
      const now = performance.now();
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "video" && s.framesDecoded > 0
            && !(s.mid in marks.first)) marks.first[s.mid] = now;
      });
    }
    marks.polls += 1;
    if (marks.polls < 1200) setTimeout(poll, 50);  // a minute at most
  };
  // The Janus baseline page calls it itself, as it sends its join.
  marks.start = () => {
    if (marks.join !== null) return;
    marks.join = performance.now();
    setTimeout(poll, 50);
  };
  WebSocket.prototype.send = function (data) {
    if (typeof data === "string" && data.includes('"type":"call.join"')) marks.start();
    return send.call(this, data);
  };
})();
"""

SNAPSHOT_JS: Final = """
async () => {
  const call = window.huddle.call;
  const keep = ["inbound-rtp", "outbound-rtp", "transport", "candidate-pair", "remote-inbound-rtp"];
  const list = (report) => {
    const out = [];
    if (report) report.forEach((s) => { if (keep.includes(s.type)) out.push(s); });
    return JSON.parse(JSON.stringify(out));
  };
  let server = null, publisher = null, subscriber = null, error = null;
  try {
    ({ server, publisher, subscriber } = await call.stats());
  } catch (e) {
    error = String(e && e.message || e);
    subscriber = call.subscriberPc ? await call.subscriberPc.getStats() : null;
    publisher = call.publisherPc ? await call.publisherPc.getStats() : null;
  }
  return {
    t: performance.now(), wall: Date.now(), error, server,
    publisher: list(publisher), subscriber: list(subscriber),
    tracks: Object.values(call.tracks), participant: call.participant,
  };
}
"""

SAMPLE_JS: Final = """
async () => {
  const pc = window.huddle.subscriberPc;
  const frames = {};
  if (pc) (await pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "video") frames[s.mid] = s.framesDecoded || 0;
  });
  return { wall: Date.now(), frames };
}
"""

# What the page says when the call fails: its state, log and connections.
STATE_JS: Final = """
() => {
  const h = window.huddle;
  if (!h) return null;
  const pc = (p) => p && {
    connection: p.connectionState, ice: p.iceConnectionState,
    remoteCandidates: p.remoteDescription
      ? p.remoteDescription.sdp.split(/\\r?\\n/).filter((l) => l.startsWith("a=candidate:")) : [],
    localCandidates: p.localDescription
      ? p.localDescription.sdp.split(/\\r?\\n/).filter((l) => l.startsWith("a=candidate:")) : [],
  };
  return {state: h.state, error: h.error, log: h.log.slice(-30),
          publisher: pc(h.publisherPc), subscriber: pc(h.subscriberPc)};
}
"""

RECEIVING_JS: Final = """
async (n) => {
  const call = window.huddle.call;
  const pc = window.huddle.subscriberPc;
  if (!call || !pc) return false;
  const video = new Set(), audio = new Set();
  (await pc.getStats()).forEach((s) => {
    const info = call.tracks[s.mid];
    if (s.type !== "inbound-rtp" || !info) return;
    if (s.kind === "video" && s.framesDecoded > 0) video.add(info.participant);
    if (s.kind === "audio" && s.packetsReceived > 0) audio.add(info.participant);
  });
  return video.size >= n && audio.size >= n;
}
"""


def there(path: Path) -> bool:
    """A pacing file exists (a stat of a local file: too short to block the loop)."""
    return path.exists()


class Aborted(RuntimeError):
    """The benchmark gave up on the call (another participant failed, or a wait ran out)."""


def check_abort(steps: Path) -> None:
    if there(steps / "abort"):
        raise Aborted("the benchmark aborted the call")


async def wait_file(path: Path, deadline: float) -> None:
    while not there(path):
        check_abort(path.parent)
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {path.name!r} from the benchmark in time")
        await asyncio.sleep(FILE_POLL_S)


async def wait_state(page: Page, wanted: str, steps: Path, deadline: float) -> None:
    while True:
        check_abort(steps)
        state = await page.evaluate("() => window.huddle ? window.huddle.state : null")
        if state == wanted:
            return
        if state == "failed":
            error = await page.evaluate("() => window.huddle.error")
            raise RuntimeError(f"the page failed before {wanted!r}: {error}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the page was not {wanted!r} in time (state {state!r})")
        await asyncio.sleep(FILE_POLL_S)


async def participate(
    args: argparse.Namespace, context: BrowserContext, out: dict[str, Any]
) -> None:
    deadline = time.monotonic() + args.timeout_s
    steps: Path = args.steps
    page = context.pages[0] if context.pages else await context.new_page()
    page.on("pageerror", lambda error: out["page_errors"].append(str(error)))
    await page.add_init_script(FIRST_FRAME_JS)
    if args.page_file is not None:
        html = args.page_file.read_text()

        async def serve(route: Route) -> None:
            await route.fulfill(body=html, content_type="text/html")

        await page.route(args.page_url.split("?", 1)[0] + "*", serve)
    await wait_file(steps / "turn", deadline)
    if args.page_url:
        await page.goto(args.page_url)
    else:
        query = urlencode({"room": args.room, "token": args.token, "publish": "1"})
        await page.goto(f"{args.base_url}/web/call.html?{query}")
    await wait_state(page, "published", steps, deadline)
    (steps / "published").touch()
    while not await page.evaluate(RECEIVING_JS, args.remotes):
        check_abort(steps)
        if time.monotonic() > deadline:
            raise TimeoutError(f"not receiving from {args.remotes} others in time")
        await asyncio.sleep(FILE_POLL_S)
    (steps / "ready").touch()
    await wait_file(steps / "go", deadline)
    out["snapshots"].append(await page.evaluate(SNAPSHOT_JS))
    next_sample = time.monotonic()
    while not there(steps / "stop"):
        check_abort(steps)
        if time.monotonic() > deadline:
            raise TimeoutError("no 'stop' from the benchmark in time")
        if there(steps / "end") and len(out["snapshots"]) == 1:
            out["snapshots"].append(await page.evaluate(SNAPSHOT_JS))
        if time.monotonic() >= next_sample:
            out["samples"].append(await page.evaluate(SAMPLE_JS))
            next_sample += SAMPLE_EVERY_S
        await asyncio.sleep(FILE_POLL_S)
    if len(out["snapshots"]) == 1:
        out["snapshots"].append(await page.evaluate(SNAPSHOT_JS))
    out["first_frames"] = await page.evaluate("() => window.__cq")
    if args.screenshot:
        await page.screenshot(path=str(args.screenshot))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"ok": False, "snapshots": [], "samples": [], "page_errors": []}
    started = time.monotonic()
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            args.profile_dir,
            executable_path=CHROMIUM,
            headless=True,
            args=[
                *CALL_CHROMIUM_ARGS,
                f"--unsafely-treat-insecure-origin-as-secure={args.base_url}",
            ],
            viewport={"width": 960, "height": 540},
        )
        out["launch_s"] = round(time.monotonic() - started, 2)
        (args.steps / "launched").touch()
        try:
            await participate(args, context, out)
            out["ok"] = True
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
            for page in context.pages:
                try:
                    out["state"] = await page.evaluate(STATE_JS)
                except Exception as why:  # the page may be gone: say so, keep the first error
                    out["state"] = f"unreadable: {why}"
        finally:
            await context.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--room", help="the call room (the project's call page)")
    parser.add_argument("--token", help="the participant's access token (the same)")
    parser.add_argument("--page-url", help="another page instead, on --base-url's origin")
    parser.add_argument(
        "--page-file", type=Path, help="the HTML served at --page-url (without its query)"
    )
    parser.add_argument("--remotes", type=bounded(int, 1, 15), required=True)
    parser.add_argument("--steps", type=Path, required=True, help="the pacing files' folder")
    parser.add_argument("--profile-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--screenshot", type=Path)
    parser.add_argument("--timeout-s", type=bounded(float, 5, 3600), default=300.0)
    args = parser.parse_args()
    if not args.page_url and not (args.room and args.token):
        parser.error("give --room and --token, or --page-url")
    if args.page_file is not None and not args.page_url:
        parser.error("--page-file needs --page-url")
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()

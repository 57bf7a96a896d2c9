"""Drive calls in the web app (``/``) between headless Chromium pages; write what was seen as JSON.

Run inside the test's network namespace (Playwright starts Chromium as its own child, so the
browser lives wherever this script does):

    ip netns exec NS python -m tests.browser.app_call_driver --base-url http://10.213.0.2:8080 \
        --scenario ringing --out result.json --shots DIR

Every page signs in through the app's dev login, each in a browser context of its own (its own
storage, so its own device id). Scenarios:

- ``ringing``: alice and bob (on two devices, one phone-sized) have a direct conversation;
  alice presses its call button, both of bob's devices show the incoming-call sheet, the phone
  accepts, the laptop's sheet goes away, and alice and bob decode each other's video; alice's
  network drops for a moment (she mutes meanwhile) and the call goes on; alice leaves. Then
  alice calls twice more: bob declines the first, nobody answers the second (the node's ring
  timeout must be short); each ends as a missed call written in the chat.
- ``group``: alice creates a group with bob and carol (whose app is in Chinese); each opens
  it and presses its call button (joining the group's call), each decodes both others; bob
  mutes his microphone and the others see the mark on his tile; alice switches to the
  active-speaker layout; bob goes back to the chat and to the call; carol switches her
  microphone in the device picker and alice goes on hearing her; alice shares her screen
  and the others show it (featured in bob's speaker layout).
- ``group_notice`` (needs a node that records a group's call in the group, docs/protocol.md
  ``call.join`` of ``conv:GROUP``, and a short ``room_empty_grace_s``): alice starts the call
  of a group that bob and carol do not have open; both get a notice; bob joins from it, carol
  opens the group (her notice goes) and joins from the ``call_started`` message; all leave and
  the group shows the call ended, with no Join button left.

The script waits for each step and records what it saw (``steps``); it stops at the first step
that does not happen in time (``error``). The test asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, Final

from playwright.async_api import Browser, Page, WebSocketRoute, async_playwright

from benchmarks.common import CHROMIUM
from huddle.call import CallClient
from huddle.client import HuddleClient
from tests.browser.driver import CALL_CHROMIUM_ARGS
from tests.helpers import make_token
from tests.media import ColorTrack, ToneTrack

STEP_TIMEOUT_S: Final = 20.0
POLL_S: Final = 0.2
# How long a held invite reply waits (see Run.hold_invite_replies).
HOLD_S: Final = 3.0
LAPTOP: Final = {"width": 1100, "height": 720}
PHONE: Final = {"width": 390, "height": 780}

# Frames decoded per remote identity on this page's subscriber connection, and the width of
# each remote tile's video as shown.
DECODED_JS: Final = """
async () => {
  const s = window.huddleCalls && window.huddleCalls.session();
  const call = s && s.call;
  if (!call || !call.subscriberPc) {
    // Why not, for a failing step to say.
    const status = document.querySelector("#call-status");
    return { missing: s ? [s.phase, s.ringId, call ? call.state : "no call"] : "no session",
             status: status && status.textContent };
  }
  const decoded = {};
  (await call.subscriberPc.getStats()).forEach((st) => {
    if (st.type !== "inbound-rtp" || st.kind !== "video") return;
    const info = call.tracks[st.mid];
    if (info) decoded[info.identity] = (decoded[info.identity] || 0) + (st.framesDecoded || 0);
  });
  const audio = {};
  (await call.subscriberPc.getStats()).forEach((st) => {
    if (st.type !== "inbound-rtp" || st.kind !== "audio") return;
    const info = call.tracks[st.mid];
    if (info) audio[info.identity] = (audio[info.identity] || 0) + (st.packetsReceived || 0);
  });
  const shown = [...document.querySelectorAll(".tile:not(.local) video")].map((v) => v.videoWidth);
  return { participant: call.participant, decoded, audio, shown };
}
"""

SYNCED_JS: Final = """
() => !!(window.huddleApp.chat && window.huddleApp.chat.syncs.some((s) => s.reply))
"""

LOADED_JS: Final = """
() => performance.getEntriesByType("resource").map((e) => new URL(e.name).pathname)
"""

MINIMISED_JS: Final = """
() => ({
  minimised: document.getElementById("call-view").classList.contains("minimised"),
  inert: document.getElementById("app").inert,
  focused: document.activeElement.id,
  tiles: document.querySelector(".call-tiles").offsetHeight,
})
"""

MIC_IN_USE_JS: Final = """
(wanted) => {
  const call = window.huddleCalls.session().call;
  const track = call.localStream && call.localStream.getAudioTracks()[0];
  return track && track.getSettings().deviceId === wanted ? track.readyState : null;
}
"""

SCREEN_WIDTH_JS: Final = """
() => { const v = document.querySelector(".tile.screen video"); return v ? v.videoWidth : 0; }
"""

CONN_DOWN_JS: Final = """
() => window.huddleApp.conn.state !== "open"
"""

FIRST_TILE_JS: Final = """
() => {
  const tiles = [...document.querySelectorAll("#call-tiles .tile")];
  const at = (t) => {
    const r = t.getBoundingClientRect();
    return [Math.round(r.top), Math.round(r.left)];
  };
  tiles.sort((a, b) => at(a)[0] - at(b)[0] || at(a)[1] - at(b)[1]);
  return tiles.length ? tiles[0].dataset.key : null;
}
"""

WATCH_TOLD_JS: Final = """
() => {
  window.__told = [];
  const call = window.huddleCalls.session().call;
  const tell = call.setTileHeight.bind(call);
  call.setTileHeight = (track, height) => {
    window.__told.push([track, height]);
    return tell(track, height);
  };
}
"""

WATCH_STOPS_JS: Final = """
() => {
  window.__stops = [];
  window.huddleCalls.ringing.on("stopped", (e) => window.__stops.push(e.reason));
}
"""

SYSTEM_TEXTS_JS: Final = """
() => [...document.querySelectorAll("#messages li.system .text")].map((e) => e.textContent)
"""


class StepFailed(Exception):
    pass


class Run:
    def __init__(self, browser: Browser, base_url: str, shots: Path) -> None:
        self.browser = browser
        self.base_url = base_url
        self.shots = shots
        self.steps: list[dict[str, Any]] = []
        self.consoles: dict[str, list[str]] = {}
        self.started = time.monotonic()
        # Pages whose replies to call.invite reach them HOLD_S late (the node's other frames
        # do not wait): the callee's answer then comes before the reply.
        self.hold_invite_replies: set[str] = set()

    def step(self, name: str, **seen: Any) -> None:
        self.steps.append({"step": name, "t": round(time.monotonic() - self.started, 2), **seen})

    async def until(self, what: str, check: Callable[[], Awaitable[Any]]) -> Any:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        value: Any = None
        while time.monotonic() < deadline:
            value = await check()
            if value:
                return value
            await asyncio.sleep(POLL_S)
        raise StepFailed(f"{what}: not within {STEP_TIMEOUT_S} s (last: {value!r})")

    async def page(
        self,
        label: str,
        name: str,
        viewport: dict[str, int] = LAPTOP,
        locale: str = "en-US",
        routed: bool = False,
    ) -> Page:
        """A signed-in page; ``routed``: its WebSocket goes through this driver (see
        ``hold_invite_replies``)."""
        context = await self.browser.new_context(viewport=viewport, locale=locale)  # type: ignore[arg-type]
        page = await context.new_page()
        if routed:
            await page.route_web_socket("**/v1/ws", partial(self._relay, label))
        lines = self.consoles[label] = []
        page.on("console", lambda m: lines.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: lines.append(f"pageerror: {e}"))
        await page.goto(self.base_url + "/")
        await page.fill("#signin-name", name)
        await page.click("#signin-dev button[type=submit]")
        await page.wait_for_selector("#convs")
        await self.until(f"{label} synced", lambda: page.evaluate(SYNCED_JS))
        return page

    def _relay(self, label: str, ws: WebSocketRoute) -> None:
        """The page's WebSocket through this driver, to hold back what it is told to."""
        server = ws.connect_to_server()
        loop = asyncio.get_running_loop()

        def from_node(message: str | bytes) -> None:
            if label in self.hold_invite_replies and _is_invite_reply(message):
                loop.call_later(HOLD_S, ws.send, message)
            else:
                ws.send(message)

        server.on_message(from_node)

    async def open(self, page: Page, name: str) -> None:
        await page.locator("button.conv", has_text=name).first.click()
        await page.wait_for_selector("#call-start")

    async def decoding(self, page: Page, label: str, others: list[str]) -> dict[str, Any]:
        last: list[dict[str, Any]] = []

        async def check() -> dict[str, Any] | None:
            got: dict[str, Any] = await page.evaluate(DECODED_JS)
            last[:] = [got]
            if "missing" in got:
                return None
            decoded = got["decoded"]
            if all(decoded.get(o, 0) > 0 for o in others) and sum(
                1 for w in got["shown"] if w > 0
            ) >= len(others):
                return got
            return None

        try:
            return dict(await self.until(f"{label} decodes video of {others}", check))
        except StepFailed as failed:
            raise StepFailed(f"{failed} (the page: {last})") from None

    async def system_text(self, page: Page, label: str, part: str) -> list[str]:
        async def check() -> list[str] | None:
            texts: list[str] = await page.evaluate(SYSTEM_TEXTS_JS)
            return texts if any(part in t for t in texts) else None

        return list(await self.until(f"{label} shows {part!r} in the chat", check))

    async def shot(self, page: Page, name: str) -> str:
        path = self.shots / f"{name}.png"
        await page.screenshot(path=str(path))
        return str(path)


def _is_invite_reply(message: str | bytes) -> bool:
    try:
        frame = json.loads(message)
    except ValueError:
        return False
    return isinstance(frame, dict) and frame.get("type") == "ok" and "call" in frame


async def _no_sheets_anywhere(pages: list[Page]) -> bool:
    return all([await _no_sheets(page) for page in pages])


async def _sheets(page: Page) -> int:
    count: int = await page.locator(".call-sheet").count()
    return count


async def ringing(run: Run) -> None:
    alice = await run.page("alice", "alice", routed=True)
    phone = await run.page("bob-phone", "bob", PHONE)
    laptop = await run.page("bob-laptop", "bob")
    # A direct conversation to call from.
    await alice.click("#new-chat")
    await alice.fill("#chat-peer", "bob")
    await alice.click("#chat-form button[type=submit]")
    await alice.fill("#composer-text", "call you now")
    await alice.press("#composer-text", "Enter")
    await alice.wait_for_selector("#call-start")
    label = await alice.get_attribute("#call-start", "aria-label")
    run.step("direct conversation", call_button_label=label, loaded=await alice.evaluate(LOADED_JS))
    for page in (phone, laptop):
        await run.open(page, "alice")

    await alice.click("#call-start")
    await alice.wait_for_selector("#call-leave")
    focused_view = await alice.evaluate("() => document.activeElement.id")
    run.step("calling", focused=focused_view, status=await alice.inner_text("#call-status"))
    for name, page in (("bob-phone", phone), ("bob-laptop", laptop)):
        await run.until(f"{name} rings", partial(_sheets, page))
    sheet = await laptop.locator(".call-sheet").inner_text()
    focused = await laptop.evaluate("() => document.activeElement.dataset.action || null")
    run.step("ringing on both devices", sheet=sheet, focused=focused)
    run.step("screens", ringing=await run.shot(laptop, "ringing-laptop"))
    await phone.click(".call-sheet [data-action=accept]")
    await run.until("the laptop stops ringing", partial(_no_sheets, laptop))
    run.step("answered elsewhere", laptop_sheets=await _sheets(laptop))
    seen_alice = await run.decoding(alice, "alice", ["bob"])
    seen_bob = await run.decoding(phone, "bob-phone", ["alice"])
    run.step("1:1 media", alice=seen_alice, bob=seen_bob)
    run.step(
        "screens",
        alice=await run.shot(alice, "call-alice"),
        bob_phone=await run.shot(phone, "call-bob-phone"),
    )

    # Alice's network drops for a moment: the call goes on, and a mute she makes meanwhile
    # reaches bob once her connection is back (call.resumed: the same participant).
    await alice.context.set_offline(True)
    await run.until("alice's connection is down", lambda: alice.evaluate(CONN_DOWN_JS))
    status_down = await alice.inner_text("#call-status")
    await alice.click("#call-mic")
    await alice.context.set_offline(False)
    alice_marks = f'.tile[data-key="{seen_alice["participant"]}"] .tile-marks'
    mark = await run.until(
        "bob sees alice's mute", lambda: _text_if(phone, alice_marks, "microphone off")
    )
    again = await run.until(
        "bob decodes more of alice",
        lambda: _more(phone, "alice", seen_bob["decoded"]["alice"]),
    )
    after = await alice.evaluate(DECODED_JS)
    run.step(
        "network dropped",
        status_down=status_down,
        status_after=await alice.inner_text("#call-status"),
        bob_sees=mark,
        bob_decoded=again["decoded"],
        alice_participant=[seen_alice["participant"], after["participant"]],
        alice_mic_pressed=await alice.get_attribute("#call-mic", "aria-pressed"),
    )

    # The language changes mid-call (the call minimised: the chat is usable again): the
    # call says everything again in it.
    await alice.click("#call-minimise")
    await alice.select_option("#lang", "zh")
    await alice.click("#call-minimise")  # restored
    run.step(
        "language mid-call",
        status=await alice.inner_text("#call-status"),
        leave=await alice.inner_text("#call-leave"),
        own=await alice.inner_text(".tile.local .tile-name"),
        mic_off=await alice.inner_text(".tile.local .tile-marks"),
    )
    await alice.click("#call-minimise")
    await alice.select_option("#lang", "en")

    await alice.click("#call-leave")
    await run.until("bob's call view closes", lambda: _gone(phone, "#call-view"))
    ended = await run.system_text(alice, "alice", "call with")
    run.step("hung up", alice_chat=ended)

    # Declined: alice sees it in the call view and both in the chat.
    await alice.click("#call-start")
    await run.until("the laptop rings again", lambda: _sheets(laptop))
    await laptop.click(".call-sheet [data-action=decline]")
    status = await run.until(
        "alice hears of the decline",
        lambda: _text_if(alice, "#call-status", "declined"),
    )
    await run.until("the phone stops ringing", partial(_no_sheets, phone))
    run.step(
        "declined",
        alice_status=status,
        alice_chat=await run.system_text(alice, "alice", "declined your video call"),
        bob_chat=await run.system_text(laptop, "bob-laptop", "You declined"),
    )
    await run.until("alice's call view closes", lambda: _gone(alice, "#call-view"))

    # Unanswered: rings until the node's ring timeout, then missed on both sides.
    await alice.click("#call-start")
    for name, page in (("bob-phone", phone), ("bob-laptop", laptop)):
        await run.until(f"{name} rings once more", partial(_sheets, page))
    await laptop.select_option("#lang", "zh")
    run.step("language while ringing", sheet=await laptop.locator(".call-sheet").inner_text())
    await laptop.select_option("#lang", "en")
    for name, page in (("bob-phone", phone), ("bob-laptop", laptop)):
        await run.until(f"{name} stops ringing (missed)", partial(_no_sheets, page))
    run.step(
        "missed",
        alice_status=await run.until(
            "alice hears nobody answered", lambda: _text_if(alice, "#call-status", "did not answer")
        ),
        alice_chat=await run.system_text(alice, "alice", "did not answer your video call"),
        bob_chat=await run.system_text(phone, "bob-phone", "Missed video call from alice"),
    )
    # Both press Call at once: one call, both in it, and no missed call in the chat.
    await run.until("alice's call view closes after the miss", lambda: _gone(alice, "#call-view"))
    unanswered = await run.system_text(alice, "alice", "did not answer")
    missed_before = len([t for t in unanswered if "did not answer" in t])
    await asyncio.gather(alice.click("#call-start"), phone.click("#call-start"))
    both_alice = await run.decoding(alice, "alice", ["bob"])
    both_bob = await run.decoding(phone, "bob-phone", ["alice"])
    await run.until("no device rings", partial(_no_sheets_anywhere, [alice, phone, laptop]))
    await alice.click("#call-leave")
    await run.until("bob's call view closes again", lambda: _gone(phone, "#call-view"))
    texts = await run.system_text(alice, "alice", "call with")
    run.step(
        "called each other",
        alice_decoded=both_alice["decoded"],
        bob_decoded=both_bob["decoded"],
        missed=[len([t for t in texts if "did not answer" in t]), missed_before],
    )

    # The caller's page reloads while it rings: bob's devices stop ringing (cancelled),
    # not at the ring timeout.
    await laptop.evaluate(WATCH_STOPS_JS)
    await alice.click("#call-start")
    await run.until("the laptop rings for the reload", lambda: _sheets(laptop))
    await alice.reload()
    await alice.wait_for_selector("#convs")
    await run.until("the laptop stops ringing after the reload", partial(_no_sheets, laptop))
    run.step(
        "caller reloaded",
        laptop_stops=await laptop.evaluate("() => window.__stops"),
        alice_view=await alice.locator("#call-view").count(),
    )

    # The callee answers before the reply to the invite reaches the caller's page (it comes
    # through another path than the answer): the caller joins all the same.
    run.hold_invite_replies.add("alice")
    await alice.click("#call-start")
    await run.until("the phone rings, the reply held", partial(_sheets, phone))
    await phone.click(".call-sheet [data-action=accept]")
    early = await run.decoding(alice, "alice", ["bob"])
    run.hold_invite_replies.clear()
    await alice.click("#call-leave")
    await run.until("bob's call view closes once more", lambda: _gone(phone, "#call-view"))
    run.step("answered before the reply", alice_decoded=early["decoded"])

    # The Chinese words of the same records.
    await laptop.select_option("#lang", "zh")
    await run.open(laptop, "alice")
    run.step("chinese", bob_chat=await run.system_text(laptop, "bob-laptop", "未接来电"))
    run.step("screens", missed=await run.shot(laptop, "missed-zh"))


async def group(run: Run) -> None:
    alice = await run.page("alice", "alice")
    bob = await run.page("bob", "bob")
    carol = await run.page("carol", "carol", PHONE, locale="zh-CN")  # her app in Chinese
    await alice.click("#new-group")
    await alice.fill("#group-name", "Standup")
    await alice.fill("#group-members", "bob, carol")
    await alice.click("#group-form button[type=submit]")
    await alice.wait_for_selector("#call-start")
    pages = {"alice": alice, "bob": bob, "carol": carol}
    # Everyone has the group open before the call starts (a member who has not gets a notice
    # of the call once the node records its start, which these steps do not click).
    for page in (bob, carol):
        await run.open(page, "Standup")
    for page in pages.values():
        await page.click("#call-start")
    seen = {}
    for name, page in pages.items():
        seen[name] = await run.decoding(page, name, [o for o in pages if o != name])
    # Carol joined last: her own tile comes first all the same (it was drawn last, at the
    # end of a grid that may need scrolling).
    run.step("group media", seen=seen, carol_first=await carol.evaluate(FIRST_TILE_JS))

    await bob.click("#call-mic")
    bob_marks = f'.tile[data-key="{seen["bob"]["participant"]}"] .tile-marks'
    marks = {}
    for name, words in (("alice", "microphone off"), ("carol", "麦克风已关闭")):
        marks[name] = await run.until(
            f"{name} sees bob muted", partial(_text_if, pages[name], bob_marks, words)
        )
    pressed = await bob.get_attribute("#call-mic", "aria-pressed")
    run.step("bob muted", marks=marks, bob_button_pressed=pressed)

    await alice.evaluate(WATCH_TOLD_JS)
    await alice.click("#call-layout")
    await alice.wait_for_selector(".call-tiles.layout-speaker .tile.featured")
    featured = await alice.get_attribute(".tile.featured", "data-key")
    # The tiles changed size: the layers asked for follow (the SFU sends the largest that
    # fits a tile; a featured one stayed at the smallest).
    told = await run.until(
        "alice tells the new tile heights",
        lambda: alice.evaluate(
            "() => new Set(window.__told.map((t) => t[0])).size >= 2 ? window.__told : null"
        ),
    )
    qualities = await run.until(
        "alice's tiles rate their network",
        lambda: alice.evaluate(
            "() => { const q = [...document.querySelectorAll('.tile:not(.screen) .tile-quality')]"
            ".map((e) => e.dataset.quality); return q.every((x) => x !== 'unknown') ? q : null; }"
        ),
    )
    run.step("speaker layout", featured=featured, qualities=qualities, told=told)

    # Back to the chat in the middle of the call, and back to the call.
    await bob.click("#call-minimise")
    await bob.fill("#composer-text", "one moment")
    await bob.press("#composer-text", "Enter")
    minimised = await bob.evaluate(MINIMISED_JS)
    shot = await run.shot(bob, "group-bob-minimised")
    await bob.click("#call-start")
    run.step("minimised", during=minimised, after=await bob.evaluate(MINIMISED_JS), shot=shot)

    # Carol switches her microphone in the device picker: the call goes on, alice hears her.
    await carol.click("#call-devices-toggle")
    await carol.wait_for_selector("#call-mic-select")
    options = await carol.eval_on_selector_all(
        "#call-mic-select option", "(list) => list.map((o) => o.value)"
    )
    chosen = options[-1]
    await carol.select_option("#call-mic-select", chosen)
    in_use = await run.until(
        "carol's new microphone in use",
        lambda: carol.evaluate(MIC_IN_USE_JS, chosen),
    )
    heard = (await alice.evaluate(DECODED_JS))["audio"].get("carol", 0)
    later = await run.until(
        "alice hears carol's new microphone", partial(_more_audio, alice, "carol", heard)
    )
    run.step("microphone switched", options=len(options), in_use=in_use, heard=[heard, later])

    # Alice shares her screen: the others get a tile of it, which the speaker layout features.
    await alice.click("#call-screen")
    shared = {}
    for name in ("bob", "carol"):
        shared[name] = await run.until(
            f"{name} shows alice's screen", partial(_screen_width, pages[name])
        )
    await bob.click("#call-layout")
    await bob.wait_for_selector(".call-tiles.layout-speaker .tile.screen.featured")
    # Bob unmutes while she shares: her tiles are drawn again, her own screen's among them
    # (it went when they were).
    await bob.click("#call-mic")
    await run.until("alice sees bob unmuted", partial(_without, alice, bob_marks, "microphone off"))
    run.step(
        "screen shared",
        widths=shared,
        alice_button=await alice.get_attribute("#call-screen", "aria-pressed"),
        bob_featured=await bob.get_attribute(".tile.featured", "data-key"),
        alice_tiles=await alice.eval_on_selector_all(
            ".tile", "(list) => list.map((e) => e.dataset.key)"
        ),
    )
    run.step(
        "screens",
        **{name: await run.shot(page, f"group-{name}") for name, page in pages.items()},
    )

    # Carol leaves the page (a tab closed) without pressing Leave: she leaves the call at
    # once, not when the node gives up waiting for her device (call_resume_s, 30 s).
    tiles_before = await _count(bob, ".tile")
    left_at = time.monotonic()
    await carol.goto("about:blank")
    await run.until("bob's tile of carol goes", lambda: _fewer(bob, ".tile", tiles_before))
    run.step(
        "page left",
        seconds=round(time.monotonic() - left_at, 1),
        status=await bob.inner_text("#call-status"),
    )


async def _fewer(page: Page, selector: str, than: int) -> bool:
    return await _count(page, selector) < than


async def group_notice(run: Run) -> None:
    alice = await run.page("alice", "alice")
    bob = await run.page("bob", "bob")
    carol = await run.page("carol", "carol", PHONE, locale="zh-CN")
    await alice.click("#new-group")
    await alice.fill("#group-name", "Standup")
    await alice.fill("#group-members", "bob, carol")
    await alice.click("#group-form button[type=submit]")
    await alice.wait_for_selector("#call-start")
    await alice.click("#call-start")
    notices = {}
    for name, page in (("bob", bob), ("carol", carol)):
        await run.until(f"{name} gets a notice", partial(_count, page, ".group-notice"))
        notices[name] = await page.inner_text(".group-notice")
    run.step("notices", **notices)
    run.step("screens", notice=await run.shot(carol, "notice-carol"))
    await bob.click(".group-notice [data-action=join]")
    joined_bob = await run.decoding(bob, "bob", ["alice"])
    await run.open(carol, "Standup")
    left = await carol.locator(".group-notice").count()
    await carol.wait_for_selector(".call-join")
    await carol.click(".call-join")
    joined_carol = await run.decoding(carol, "carol", ["alice", "bob"])
    run.step("joined", bob=joined_bob, carol=joined_carol, carol_notices_after_open=left)
    for page in (alice, bob, carol):
        await page.click("#call-leave")
    texts = await run.system_text(alice, "alice", "Call ended")
    run.step("ended", alice_chat=texts, join_buttons=await _count(alice, ".call-join"))


async def _count(page: Page, selector: str) -> int:
    count: int = await page.locator(selector).count()
    return count


async def _more(page: Page, identity: str, than: int) -> dict[str, Any] | None:
    got: dict[str, Any] = await page.evaluate(DECODED_JS)
    return got if "decoded" in got and got["decoded"].get(identity, 0) > than else None


async def _more_audio(page: Page, identity: str, than: int) -> int | None:
    got: dict[str, Any] = await page.evaluate(DECODED_JS)
    packets = int(got["audio"].get(identity, 0)) if "audio" in got else 0
    return packets if packets > than else None


async def _screen_width(page: Page) -> int:
    width: int = await page.evaluate(SCREEN_WIDTH_JS)
    return width


async def _no_sheets(page: Page) -> bool:
    return await _sheets(page) == 0


async def _gone(page: Page, selector: str) -> bool:
    return await page.locator(selector).count() == 0


async def _text_if(page: Page, selector: str, part: str) -> str | None:
    locator = page.locator(selector)
    if await locator.count() == 0:
        return None
    text = await locator.first.inner_text()
    return text if part in text else None


async def _without(page: Page, selector: str, part: str) -> bool:
    """Whether the element at ``selector`` is there and its text lacks ``part``."""
    locator = page.locator(selector)
    return await locator.count() > 0 and part not in await locator.first.inner_text()


async def selection(run: Run) -> None:
    """A group call larger than the node forwards every video of (the test's node: video of
    the latest speaker only, above 2 participants): alice, in the app, with two bots; bob
    speaks, carol is silent."""
    alice = await run.page("alice", "alice")
    await alice.click("#new-group")
    await alice.fill("#group-name", "Many")
    await alice.fill("#group-members", "bob, carol")
    await alice.click("#group-form button[type=submit]")
    await alice.wait_for_selector("#call-start")
    conv = await alice.evaluate("() => window.huddleApp.current")
    bots: list[CallClient] = []
    try:
        for name, colour, loud in (("bob", (240, 40, 40), 9000), ("carol", (40, 40, 240), 0)):
            client = HuddleClient(run.base_url, make_token(name), device=f"bot-{name}")
            await client.connect()
            await client.hello()
            bot = CallClient(client, f"conv:{conv}")
            bots.append(bot)
            await bot.join()
            await bot.publish(ColorTrack(colour), ToneTrack(330, amplitude=loud))
        await alice.click("#call-start")
        seen = await run.decoding(alice, "alice", ["bob"])
        carol_tile = f'.tile[data-key="{bots[1].participant}"]'
        text = await run.until(
            "carol's tile says why it has no video",
            lambda: _text_if(alice, f"{carol_tile}.video-unselected", "latest speakers"),
        )
        # Measured meanwhile (every QUALITY_INTERVAL_MS): no video from her is no bad network.
        await asyncio.sleep(4)
        quality = await alice.get_attribute(f"{carol_tile} .tile-quality", "data-quality")
        bob_tile = f'.tile[data-key="{bots[0].participant}"]'
        run.step(
            "left out by selection",
            decoded=seen["decoded"],
            carol_text=text,
            carol_quality=quality,
            carol_placeholder=await alice.is_visible(f"{carol_tile} .tile-placeholder"),
            bob_placeholder=await alice.is_visible(f"{bob_tile} .tile-placeholder"),
        )
        run.step("screens", selection=await run.shot(alice, "selection-alice"))
    finally:
        for bot in bots:
            await bot.close()


SCENARIOS: Final = {
    "ringing": ringing,
    "group": group,
    "group_notice": group_notice,
    "selection": selection,
}


async def drive(
    base_url: str, shots: Path, scenario: Callable[[Run], Awaitable[None]]
) -> dict[str, Any]:
    """Run ``scenario`` in one Chromium (the pages it opens share it): its steps, the pages'
    console tails, and ``ok`` or the error it ended with."""
    out: dict[str, Any] = {"ok": False}
    origin = base_url.rstrip("/")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CALL_CHROMIUM_ARGS, f"--unsafely-treat-insecure-origin-as-secure={origin}"],
        )
        run = Run(browser, origin, shots)
        try:
            await scenario(run)
            out["ok"] = True
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            out["steps"] = run.steps
            out["console"] = {k: v[-30:] for k, v in run.consoles.items()}
            await browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), required=True)
    parser.add_argument("--shots", type=Path, required=True, help="folder for screenshots")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON result goes")
    args = parser.parse_args()
    args.shots.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(drive(args.base_url, args.shots, SCENARIOS[args.scenario]))
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

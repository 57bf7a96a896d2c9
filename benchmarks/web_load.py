"""Web app budgets (issue 13) in real headless Chromium: first render of a 200-conversation
list, opening a 10,000-message conversation, and what the first screen loads.

    python -m benchmarks.web_load                   # 200 conversations, 10,000 messages
    python -m benchmarks.web_load --conversations 10 --messages 200 --repeat 1 --json out.json

It starts ``huddle serve`` on 127.0.0.1 (embedded Redis, a throwaway data folder, dev login
on, the per-connection and chat send limits raised so that seeding measures nothing) and
seeds, through the project's Python client (one ``ChatClient``), a user with
``--conversations`` conversations (groups and direct chats, one message each), one of which
holds ``--messages`` messages. Then Debian's Chromium, driven by Playwright, opens the app at
``/`` with that user's session kept (as after an earlier sign-in), once per ``--repeat`` in a
fresh browser context (empty IndexedDB and HTTP cache), each followed by a warm reload. Every
time is read from the page's own clock (``performance.now()``, zero at navigation start), so
Playwright's round trips are not in it. Targets are printed, not asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import statistics
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any, Final

from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from benchmarks.common import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Say,
    fmt,
    goal,
    goal_table,
    log_problems,
    run_main,
    stderr_say,
    table,
    write_json,
)
from benchmarks.procs import (
    bounded,
    free_port,
    huddle_command,
    node_env,
    start_healthy,
    stop_process,
)
from chat import wire as w
from huddle.chat import ChatClient
from huddle.client import HuddleClient, dev_login

WEB_CHROMIUM_ARGS: Final = (
    *CHROMIUM_ARGS,
    # Only loopback: any other host name fails to resolve, so nothing leaves the machine
    # (a request to one is still seen, and counted, before it fails).
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
API_KEY: Final = "bench"
USER: Final = "Ada"
SESSION_KEY: Final = "huddle.session"  # where the app keeps its session (huddle/web/app/app.js)
VIEWPORT: Final = {"width": 1280, "height": 800}
# Sends in flight while seeding: enough to keep the node busy, bounded.
SEED_WINDOW: Final = 64
SEED_TIMEOUT_S: Final = 600.0
PAGE_TIMEOUT_S: Final = 60.0
# After the list is complete, what the first screen still loads comes within this.
SETTLE_S: Final = 1.0
TARGET_LIST_MS: Final = 1000.0
TARGET_OPEN_MS: Final = 300.0
TARGET_BYTES: Final = 300 * 1024

# Installed before the app's scripts: records (page clock) when the list first holds every
# row (DOM) and the frame after it (painted).
LIST_WATCH_JS: Final = """
(want) => {
  const done = (window.__bench = { list_dom: null, list_painted: null });
  const check = () => {
    if (done.list_dom !== null) return;
    if (document.querySelectorAll('#convs button.conv').length < want) return;
    done.list_dom = performance.now();
    observer.disconnect();
    requestAnimationFrame(() => setTimeout(() => { done.list_painted = performance.now(); }, 0));
  };
  const observer = new MutationObserver(check);
  observer.observe(document, { childList: true, subtree: true });
  check();
}
"""

# Before the click: the click's own time, then when the newest message is in the list and
# inside its visible part (DOM), and the frame after it (painted).
OPEN_WATCH_JS: Final = """
([conv, lastSeq]) => {
  const done = (window.__open = { clicked: null, dom: null, painted: null, rows: 0 });
  const button = document.querySelector(`#convs button.conv[data-conv="${conv}"]`);
  const clicked = () => { done.clicked = performance.now(); };
  button.addEventListener('click', clicked, { capture: true, once: true });
  const check = () => {
    if (done.clicked === null || done.dom !== null) return;
    const list = document.getElementById('messages');
    const last = list && list.querySelector(`li[data-seq="${lastSeq}"]`);
    if (!last) return;
    const box = list.getBoundingClientRect();
    const row = last.getBoundingClientRect();
    if (row.bottom > box.bottom + 1 || row.top < box.top - 1) return;
    done.dom = performance.now();
    done.rows = list.querySelectorAll('li[data-seq]').length;
    observer.disconnect();
    requestAnimationFrame(() => setTimeout(() => { done.painted = performance.now(); }, 0));
  };
  const observer = new MutationObserver(check);
  observer.observe(document.body, { childList: true, subtree: true, attributes: true });
}
"""


async def seed(url: str, conversations: int, messages: int, say: Say) -> tuple[str, int]:
    """The user's conversations; returns the big one's id and its last message's seq."""
    token = await dev_login(url, USER)
    async with HuddleClient(url, token, device="seeder") as client:
        await client.hello()
        chat = ChatClient(client)
        window = asyncio.Semaphore(SEED_WINDOW)

        async def bounded_send(conv: str | None, text: str, to: str | None = None) -> int:
            async with window:
                reply = await chat.send(conv, text, to=to)
                return int(reply.seq)

        big = await chat.create("group", "Big room", ["peer-big"])
        others = conversations - 1
        groups = others // 2
        for i in range(groups):
            summary = await chat.create("group", f"Group {i}", [f"peer-g{i}"])
            await bounded_send(summary.conv, f"hello group {i}")
        await asyncio.gather(
            *(bounded_send(None, f"hello {i}", to=f"peer-d{i}") for i in range(others - groups))
        )
        say(f"{conversations - 1} small conversations seeded")
        t0 = time.monotonic()
        seqs = await asyncio.gather(
            *(bounded_send(big.conv, f"message {i + 1} of {messages}") for i in range(messages))
        )
        say(f"{messages} messages in {time.monotonic() - t0:.1f} s")
        listed = (await chat.request(w.ChatList(id="", limit=500))).conversations
        if len(listed) != conversations:
            raise RuntimeError(f"seeded {len(listed)} conversations, not {conversations}")
        return big.conv, max(seqs)


async def fresh_context(browser: Browser, url: str, token: str) -> BrowserContext:
    """A new profile (no IndexedDB, no cache) in which the user had signed in earlier: the
    app finds its kept session and resumes it."""
    context = await browser.new_context(viewport=VIEWPORT, locale="en-US")  # type: ignore[arg-type]
    session = json.dumps({"mode": "token", "token": token, "identity": USER.lower()})
    key = json.dumps(SESSION_KEY)
    await context.add_init_script(
        f"if (!localStorage.getItem({key})) localStorage.setItem({key}, {json.dumps(session)});"
    )
    return context


async def wait_js(page: Page, expression: str, what: str) -> Any:
    try:
        handle = await page.wait_for_function(expression, timeout=PAGE_TIMEOUT_S * 1000)
    except Exception as e:
        raise RuntimeError(f"timed out waiting for {what}") from e
    return await handle.json_value()


async def one_view(
    page: Page, url: str, conversations: int, big: str, last_seq: int, reload: bool
) -> dict[str, Any]:
    """Load ``/`` (or reload it), until the list is complete; then open the big conversation."""
    requests: list[Any] = []
    sockets: list[str] = []

    def on_request(request: Any) -> None:
        requests.append(request)

    def on_socket(socket: Any) -> None:
        sockets.append(socket.url)

    page.on("request", on_request)
    page.on("websocket", on_socket)
    if reload:
        await page.reload(wait_until="commit")
    else:
        await page.goto(url + "/", wait_until="commit")
    await wait_js(page, "() => window.__bench && window.__bench.list_painted", "the list")
    marks = await page.evaluate(
        "() => ({...window.__bench, scripts_run: "
        "performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd})"
    )
    await asyncio.sleep(SETTLE_S)
    first_screen = list(requests)
    page.remove_listener("request", on_request)
    page.remove_listener("websocket", on_socket)
    node = urllib.parse.urlsplit(url).netloc
    loaded = 0
    files: list[tuple[str, int]] = []
    foreign: list[str] = []
    for request in first_screen:
        parts = urllib.parse.urlsplit(request.url)
        if parts.scheme in ("data", "blob"):
            continue
        if parts.netloc != node:
            foreign.append(request.url)
            continue
        response = await request.response()
        if response is not None and response.status != 304:
            size = len(await response.body())
            loaded += size
            files.append((parts.path, size))
    foreign += [s for s in sockets if urllib.parse.urlsplit(s).netloc != node]

    await page.evaluate(OPEN_WATCH_JS, [big, last_seq])
    await page.click(f'#convs button.conv[data-conv="{big}"]')
    opened = await wait_js(page, "() => window.__open.painted && window.__open", "the big one")
    return {
        # The app's modules have run (they are deferred, so before DOMContentLoaded ends);
        # the rest of the list's time is the connection, chat.sync and chat.list.
        "scripts_run_ms": marks["scripts_run"],
        "list_dom_ms": marks["list_dom"],
        "list_painted_ms": marks["list_painted"],
        "open_dom_ms": opened["dom"] - opened["clicked"],
        "open_painted_ms": opened["painted"] - opened["clicked"],
        "open_rows": opened["rows"],
        "requests": len(first_screen),
        "bytes": loaded,
        "files": files,
        "foreign": foreign,
        "rows": await page.evaluate("() => document.querySelectorAll('#convs button.conv').length"),
        "conversations": conversations,
    }


async def measure(
    url: str, token: str, args: argparse.Namespace, big: str, last_seq: int, say: Say
) -> list[dict[str, Any]]:
    views: list[dict[str, Any]] = []
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(WEB_CHROMIUM_ARGS)
        )
        try:
            for run in range(args.repeat):
                context = await fresh_context(browser, url, token)
                await context.add_init_script(f"({LIST_WATCH_JS})({args.conversations})")
                page = await context.new_page()
                errors: list[str] = []

                def on_error(error: Exception, errors: list[str] = errors) -> None:
                    errors.append(str(error))

                page.on("pageerror", on_error)
                for reload in (False, True):
                    view = await one_view(page, url, args.conversations, big, last_seq, reload)
                    view.update(run=run, kind="warm reload" if reload else "cold", errors=errors[:])
                    views.append(view)
                    say(
                        f"run {run + 1} {view['kind']}: list {view['list_painted_ms']:.0f} ms,"
                        f" open {view['open_painted_ms']:.0f} ms, {view['bytes']:,} bytes"
                    )
                await context.close()
        finally:
            await browser.close()
    return views


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def summarize(views: list[dict[str, Any]]) -> dict[str, Any]:
    cold = [v for v in views if v["kind"] == "cold"]
    warm = [v for v in views if v["kind"] == "warm reload"]
    summary: dict[str, Any] = {
        "list_first_render_ms": median([v["list_painted_ms"] for v in cold]),
        "list_first_render_ms_max": max(v["list_painted_ms"] for v in cold),
        "list_warm_reload_ms": median([v["list_painted_ms"] for v in warm]),
        "open_10k_last_page_ms": median([v["open_painted_ms"] for v in views]),
        "open_10k_last_page_ms_max": max(v["open_painted_ms"] for v in views),
        "first_screen_bytes": max(v["bytes"] for v in cold),
        "first_screen_requests": max(v["requests"] for v in cold),
        "foreign_requests": sum(len(v["foreign"]) for v in views),
        "page_errors": sum(len(v["errors"]) for v in views),
    }
    summary["goals"] = {
        "list first render, ms (median, cold)": goal(
            summary["list_first_render_ms"], f"< {TARGET_LIST_MS:.0f}", lambda x: x < TARGET_LIST_MS
        ),
        "open 10k, last page, ms (median)": goal(
            summary["open_10k_last_page_ms"],
            f"< {TARGET_OPEN_MS:.0f}",
            lambda x: x < TARGET_OPEN_MS,
        ),
        "first screen, KB": goal(
            summary["first_screen_bytes"] / 1024, f"<= {TARGET_BYTES // 1024}", lambda x: x <= 300
        ),
        "foreign requests": goal(summary["foreign_requests"], "0", lambda x: x == 0),
    }
    return summary


def report(views: list[dict[str, Any]], summary: dict[str, Any], config: dict[str, Any]) -> None:
    print(
        f"web_load: {config['conversations']} conversations, one of {config['messages']:,}"
        f" messages; {config['repeat']} fresh context(s), each then reloaded"
    )
    rows = [
        (
            f"{v['run'] + 1} {v['kind']}",
            fmt(v["scripts_run_ms"], 0),
            fmt(v["list_dom_ms"], 0),
            fmt(v["list_painted_ms"], 0),
            fmt(v["open_dom_ms"], 0),
            fmt(v["open_painted_ms"], 0),
            str(v["requests"]),
            f"{v['bytes'] / 1024:,.1f}",
            str(len(v["foreign"])),
        )
        for v in views
    ]
    header = (
        "run",
        "scripts run ms",
        "list dom ms",
        "list painted ms",
        "open dom ms",
        "open painted ms",
        "requests",
        "KB",
        "foreign",
    )
    print("\n".join(table(rows, header)))
    for line in goal_table(summary["goals"], 0):
        print(line)
    if summary["page_errors"]:
        print(f"page errors: {summary['page_errors']}")


async def bench(args: argparse.Namespace, say: Say) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="web-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = node_env(API_KEY, secrets.token_urlsafe(32), HUDDLE_SFU_WORKERS="0")
    big_count = args.messages + 10
    options = (
        "--dev-login",
        "--log-level",
        "warning",
        "--rate-per-s",
        "100000",
        "--rate-burst",
        "100000",
        "--chat-send-per-s",
        "100000",
        "--chat-replay-events",
        str(max(20000, big_count)),
    )
    log = work / "node.log"
    node = await asyncio.to_thread(
        start_healthy, huddle_command(port, work / "node", *options), env, url, log
    )
    try:
        say(f"node on {url}; seeding")
        big, last_seq = await asyncio.wait_for(
            seed(url, args.conversations, args.messages, say), SEED_TIMEOUT_S
        )
        token = await dev_login(url, USER)
        views = await measure(url, token, args, big, last_seq, say)
        problems = log_problems(log, most=10)
    finally:
        stop_process(node)
        shutil.rmtree(work, ignore_errors=True)
    return {"views": views, "node_problems": problems}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.web_load", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--conversations", type=bounded(int, 2, 500), default=200)
    parser.add_argument("--messages", type=bounded(int, 60, 20000), default=10000)
    parser.add_argument("--repeat", type=bounded(int, 1, 20), default=3)
    parser.add_argument("--json", type=Path, help="write every figure here, with a summary")
    args = parser.parse_args(argv)
    say = stderr_say(time.monotonic())
    results = asyncio.run(bench(args, say))
    summary = summarize(results["views"])
    config = {"conversations": args.conversations, "messages": args.messages, "repeat": args.repeat}
    report(results["views"], summary, config)
    if results["node_problems"]:
        print(f"node problems: {results['node_problems']}")
    if args.json:
        write_json(
            args.json, "web_load", {"config": config, **results, "summary": summary}, say=say
        )
    return 0


if __name__ == "__main__":
    run_main(main)

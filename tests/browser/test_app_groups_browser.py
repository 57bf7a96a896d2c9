"""Groups and channels in the web app, in real Chromium with three users: what one does in
the details panel (add, roles, rename, remove, leave) shows in the others' browsers; a
refusal from the server (a device that missed its demotion) is shown in words; a channel is
followed by its id, its followers get the admins' posts live and cannot post themselves;
muting shows in the list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, WebSocketRoute

from tests.browser.chat_pages import (
    PHONE,
    chromium,
    loaded,
    new_page,
    open_conversation,
    send,
    sign_in,
    texts,
    unlabelled,
    until,
)
from tests.helpers import Node

pytestmark = pytest.mark.browser

SYSTEM_JS = (
    "() => [...document.querySelectorAll('#messages li.system .text')].map((e) => e.textContent)"
)
MEMBERS_JS = """
() => [...document.querySelectorAll('#details-members li.member')]
  .map((li) => [li.dataset.user, li.dataset.role])
"""
CONVS_JS = """
() => [...document.querySelectorAll('button.conv .conv-name')].map((e) => e.firstChild.textContent)
"""


async def _convs(page: Page) -> list[str]:
    return list(await page.evaluate(CONVS_JS))


async def _system(page: Page) -> list[str]:
    return list(await page.evaluate(SYSTEM_JS))


async def _members(page: Page) -> dict[str, str]:
    return {user: role for user, role in await page.evaluate(MEMBERS_JS)}


async def _has(page: Page, selector: str) -> bool:
    return bool(await page.locator(selector).count())


async def _text(page: Page, selector: str) -> str:
    return (await page.text_content(selector)) or ""


async def _open_details(page: Page) -> None:
    await page.click("#details-open")
    await page.wait_for_selector("#details[open] #details-members li.member")


async def test_group_management_shows_in_every_browser(node: Node, tmp_path: Path) -> None:
    async with chromium() as browser:
        _, ada, ada_log = await new_page(browser)
        _, bob, bob_log = await new_page(browser, locale="zh-CN")
        _, carol, carol_log = await new_page(browser, viewport=PHONE)
        # Bob's device can be made to miss the conversation's events (see the refusal below).
        deaf = False

        def relay(ws: WebSocketRoute) -> None:
            server = ws.connect_to_server()

            def down(message: str | bytes) -> None:
                if deaf and isinstance(message, str) and '"chat.message"' in message:
                    return
                ws.send(message)

            server.on_message(down)

        await bob.route_web_socket("**/v1/ws", relay)
        for page, name in ((ada, "Ada"), (bob, "Bob"), (carol, "Carol")):
            await sign_in(page, node.url, name)

        # Ada makes a group with bob: it opens for her and appears in bob's list, not carol's.
        await ada.click("#new-group")
        await ada.fill("#group-name", "Kyoto trip")
        await ada.fill("#group-members", "bob")
        await ada.press("#group-members", "Enter")
        await until(lambda: _text(ada, "#conv-title"), "ada's group opened", ada_log)
        assert await _text(ada, "#conv-title") == "Kyoto trip"
        await until(lambda: _has(bob, "button.conv:has-text('Kyoto trip')"), "bob's list", bob_log)
        assert "Kyoto trip" not in await _convs(carol)

        # Ada adds carol from the details panel: carol's list gets the group.
        await _open_details(ada)
        assert await _members(ada) == {"ada": "owner", "bob": "member"}
        await ada.fill("#add-members", "carol")
        await ada.click("#add-submit")
        await until(lambda: _has(carol, "button.conv:has-text('Kyoto trip')"), "carol added")
        await until(
            lambda: _equals(_members(ada), {"ada": "owner", "bob": "member", "carol": "member"}),
            "panel",
        )

        # Ada makes bob an admin: the history says so in both languages, and bob's panel
        # now offers renaming.
        await ada.select_option("#role-bob", "admin")
        await until(
            lambda: _equals(_members(ada), {"ada": "owner", "bob": "admin", "carol": "member"}),
            "bob admin",
        )
        await open_conversation(carol, "Kyoto trip")
        await until(
            lambda: _contains(_system(carol), "ada made bob an admin"), "carol's history", carol_log
        )
        await open_conversation(bob, "Kyoto trip")
        await until(
            lambda: _contains(_system(bob), "ada 将 bob 设为管理员"), "bob's history", bob_log
        )
        await _open_details(bob)
        assert await unlabelled(bob) == []
        assert await _has(bob, "#rename-form")
        assert not await _has(bob, "#role-ada"), "only the owner gives roles"
        assert await _has(bob, "#remove-carol") and not await _has(bob, "#remove-ada")

        # Bob renames it in Chinese: every list and header shows the new name.
        await bob.fill("#rename-input", "京都之旅")
        await bob.click("#rename-save")
        await until(lambda: _equals(_text(ada, "#conv-title"), "京都之旅"), "ada's header", ada_log)
        await until(lambda: _contains(_convs(carol), "京都之旅"), "carol's list", carol_log)
        await until(lambda: _equals(_text(bob, "#details-title"), "京都之旅"), "bob's panel")
        await until(
            lambda: _contains(_system(ada), "bob renamed the conversation to “京都之旅”"), "ada"
        )
        await until(lambda: _contains(_system(bob), "bob 将会话改名为“京都之旅”"), "bob zh")
        await bob.screenshot(path=str(tmp_path / "bob-admin-details-zh.png"))

        # Carol, a member, sees the members and roles but nothing to manage.
        await _open_details(carol)
        assert await _members(carol) == {"ada": "owner", "bob": "admin", "carol": "member"}
        for selector in ("#rename-form", "#add-form", ".remove-member", ".role-select"):
            assert not await _has(carol, selector), selector
        assert await _has(carol, "#leave-conv")
        await carol.screenshot(path=str(tmp_path / "carol-member-details-phone.png"))
        await carol.click("#details-close")

        # Ada demotes bob while bob's device misses it: bob's panel still offers adding, and
        # the server's refusal is shown in words; then the panel catches up.
        deaf = True
        await ada.select_option("#role-bob", "member")
        await until(
            lambda: _equals(_members(ada), {"ada": "owner", "bob": "member", "carol": "member"}),
            "demoted",
        )
        assert await _has(bob, "#add-form")
        await bob.fill("#add-members", "dave")
        await bob.click("#add-submit")
        await until(
            lambda: _contains(_text(bob, "#details-error"), "只有所有者或管理员可以添加成员"),
            "refusal",
            bob_log,
        )
        await until(
            lambda: _equals(_has(bob, "#add-form"), False), "bob's panel caught up", bob_log
        )
        assert await _members(bob) == {"ada": "owner", "bob": "member", "carol": "member"}
        await bob.screenshot(path=str(tmp_path / "bob-refused-zh.png"))
        deaf = False
        await bob.click("#details-close")

        # Ada removes carol: carol, who has it open, loses it and is told so.
        await ada.click("#remove-carol")
        await until(lambda: _equals(_members(ada), {"ada": "owner", "bob": "member"}), "removed")
        await until(lambda: _has(carol, "#conv-gone"), "carol told", carol_log)
        assert await _text(carol, "#conv-gone") == "You are no longer in “京都之旅”."
        assert await carol.is_visible("#conv-gone"), "on a phone too"
        assert "京都之旅" not in await _convs(carol)
        await until(lambda: _contains(_system(ada), "ada removed carol"), "ada's history")
        await carol.screenshot(path=str(tmp_path / "carol-removed-phone.png"))
        await carol.click("#conversation .back")
        assert await carol.is_visible("#convs")

        # Ada, the owner, leaves (bob's device hears events again): she loses it, and bob,
        # the longest-standing member, takes over; his panel now offers roles.
        await bob.reload()
        await bob.wait_for_selector("#convs")
        await open_conversation(bob, "京都之旅")
        await _open_details(bob)
        assert not await _has(bob, "#add-form")
        await ada.click("#leave-conv")
        await until(lambda: _has(ada, "#conv-gone"), "ada left", ada_log)
        assert await _text(ada, "#conv-gone") == "You left “京都之旅”."
        assert not await _has(ada, "#details")
        assert "京都之旅" not in await _convs(ada)
        await until(lambda: _contains(_system(bob), "ada 离开了\uff0cbob 成为所有者"), "handover")
        await until(lambda: _equals(_members(bob), {"bob": "owner"}), "bob owner", bob_log)
        assert await _has(bob, "#add-form") and await _has(bob, "#rename-form")
        assert "你的角色\uff1a所有者" in await _text(bob, ".details-kind")
        await bob.screenshot(path=str(tmp_path / "bob-owner-details-zh.png"))
        await ada.screenshot(path=str(tmp_path / "ada-left.png"))
        _no_errors(ada_log, bob_log, carol_log)


async def test_channel_followers_read_admins_post_and_mute(node: Node, tmp_path: Path) -> None:
    async with chromium() as browser:
        _, ada, ada_log = await new_page(browser)
        _, erin, erin_log = await new_page(browser, locale="zh-CN", viewport=PHONE)
        await sign_in(ada, node.url, "Ada")
        await sign_in(erin, node.url, "Erin")

        # The details panel is not part of the first screen: it loads when first opened.
        assert not [url for url in await loaded(ada) if "groups-panel" in url]

        # Ada makes a channel; its id is in the details panel for her to hand out.
        await ada.click("#new-channel")
        await ada.fill("#channel-name", "Huddle releases")
        await ada.press("#channel-name", "Enter")
        await until(
            lambda: _equals(_text(ada, "#conv-title"), "Huddle releases"), "opened", ada_log
        )
        assert await ada.is_visible("#composer-text"), "the owner posts"
        await _open_details(ada)
        assert [url for url in await loaded(ada) if url.endswith("/web/app/groups-panel.js")]
        assert await unlabelled(ada) == []
        channel = await _text(ada, "#channel-id")
        assert channel.startswith("c-")
        await ada.click("#details-close")
        await send(ada, "Huddle 1.4 is out")

        # An id that is no channel is refused in words.
        group = (await ada.evaluate("() => huddleApp.chat.createGroup('Only us', [])"))["conv"]
        await erin.click("#follow-channel")
        await erin.fill("#follow-id", group)
        await erin.press("#follow-id", "Enter")
        await until(
            lambda: _contains(_text(erin, "#follow-form-error"), "没有此 ID 的频道"), "refused"
        )

        # Erin follows it by its id: it opens with its past, read-only for her.
        await erin.fill("#follow-id", channel)
        await erin.press("#follow-id", "Enter")
        await until(lambda: _equals(texts(erin), ["Huddle 1.4 is out"]), "the past", erin_log)
        assert await erin.is_visible("#readonly-note")
        assert not await erin.is_visible("#composer-text")
        assert "只有频道管理员可以在此发言" in await _text(erin, "#readonly-note")
        assert await unlabelled(erin) == []

        # The admin's posts reach her live.
        await send(ada, "1.4.1 fixes the search box")
        want = ["Huddle 1.4 is out", "1.4.1 fixes the search box"]
        await until(lambda: _equals(texts(erin), want), "a live post", erin_log)
        await _open_details(ada)
        await until(
            lambda: _equals(_members(ada), {"ada": "owner", "erin": "follower"}), "follower"
        )

        # Erin mutes it: the header button says so and the list marks it.
        await erin.click("#mute-toggle")
        await until(
            lambda: _equals(erin.get_attribute("#mute-toggle", "aria-pressed"), "true"), "muted"
        )
        assert await _text(erin, "#mute-toggle") == "取消静音"
        await until(lambda: _has(erin, "button.conv .muted"), "the list's mark", erin_log)
        await erin.screenshot(path=str(tmp_path / "erin-follower-zh-phone.png"))

        # Ada makes her an admin: her composer comes, and her post reaches ada.
        await ada.select_option("#role-erin", "admin")
        await until(lambda: erin.is_visible("#composer-text"), "erin may post", erin_log)
        assert not await erin.is_visible("#readonly-note")
        await send(erin, "谢谢大家")
        await until(lambda: _contains(texts(ada), "谢谢大家"), "erin's post at ada", ada_log)
        await until(lambda: _contains(_system(erin), "ada 将 erin 设为管理员"), "zh")
        await ada.screenshot(path=str(tmp_path / "ada-channel-owner.png"))

        # Made a member again she still posts (only followers are read-only); then she
        # leaves, and unmutes nothing on the way: the list loses it.
        await ada.select_option("#role-erin", "member")
        await until(lambda: _contains(_system(erin), "ada 将 erin 设为普通成员"), "member")
        assert await erin.is_visible("#composer-text")
        await erin.click("#mute-toggle")
        await until(
            lambda: _equals(erin.get_attribute("#mute-toggle", "aria-pressed"), "false"), "unmuted"
        )
        await until(lambda: _equals(_has(erin, "button.conv .muted"), False), "no mark")
        await _open_details(erin)
        await erin.click("#leave-conv")
        await until(lambda: _has(erin, "#conv-gone"), "left", erin_log)
        assert "Huddle releases" not in await _convs(erin)

        # A follower unfollows from the read-only note.
        await erin.click("#conversation .back")
        await erin.click("#follow-channel")
        await erin.fill("#follow-id", channel)
        await erin.press("#follow-id", "Enter")
        await until(lambda: erin.is_visible("#readonly-note"), "following again", erin_log)
        await erin.click("#unfollow-inline")
        await until(lambda: _has(erin, "#conv-gone"), "unfollowed", erin_log)
        assert await _text(erin, "#conv-gone") == "你已退出“Huddle releases”。"
        await ada.click("#details-close")
        await _open_details(ada)
        assert await _members(ada) == {"ada": "owner"}
        _no_errors(ada_log, erin_log)


async def _equals(value: Any, want: Any) -> bool:
    return bool(await value == want)


async def _contains(value: Any, part: Any) -> bool:
    return part in await value


def _no_errors(*logs: list[str]) -> None:
    errors = [line for log in logs for line in log if line.startswith(("pageerror", "error"))]
    assert not errors, json.dumps(errors, ensure_ascii=False, indent=1)

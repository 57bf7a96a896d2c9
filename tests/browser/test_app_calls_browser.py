"""Calls in the web app (``/``), in Chromium pages inside a network namespace: a 1:1 call rung
from a direct conversation (both of the callee's devices ring, one answers, the other stops,
both sides decode each other, a short network drop on one side does not end the call, and a
mute made during it arrives), a declined and an unanswered call that the chat shows as
missed (in English and Chinese), and a three-user call started from a group (each page
decodes both others, a mute seen by the others, the active-speaker layout, a microphone
switched in the device picker, a screen shared)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from tests.browser.harness import NamespacedNode, namespaced_node, run_driver
from tests.browser.netns import NetworkNamespace

pytestmark = pytest.mark.browser

DRIVER_TIMEOUT_S: Final = 150.0
RING_TIMEOUT_S: Final = "4"


@pytest.fixture
def call_node(netns: NetworkNamespace, tmp_path: Path) -> Iterator[NamespacedNode]:
    settings = {
        "HUDDLE_RING_TIMEOUT_S": RING_TIMEOUT_S,
        "HUDDLE_RING_SWEEP_S": "0.2",
        "HUDDLE_ROOM_EMPTY_GRACE_S": "1",  # a group's call ends (and is recorded) soon after
    }
    with namespaced_node(netns, tmp_path, settings) as node:
        yield node


def _run(node: NamespacedNode, tmp_path: Path, scenario: str) -> dict[str, dict[str, Any]]:
    result_path = tmp_path / f"{scenario}.json"
    result = run_driver(
        node.ns,
        result_path,
        DRIVER_TIMEOUT_S,
        "--base-url",
        node.url,
        "--scenario",
        scenario,
        "--shots",
        str(tmp_path / "shots"),
        module="tests.browser.app_call_driver",
    )
    context = (
        f"driver: {json.dumps(result, indent=1)[-8000:]}\n"
        f"node log:\n{node.log_tail()}\n(full result: {result_path})"
    )
    assert result["ok"], context
    steps: dict[str, dict[str, Any]] = {}
    for step in result["steps"]:
        steps.setdefault(step["step"], {}).update(step)
    for path in steps["screens"].values():
        if isinstance(path, str) and path.endswith(".png"):
            assert Path(path).stat().st_size > 5_000, path
    return steps


def test_a_call_rung_from_the_app_rings_both_devices_and_missed_calls_show_in_the_chat(
    call_node: NamespacedNode, tmp_path: Path
) -> None:
    steps = _run(call_node, tmp_path, "ringing")
    assert steps["direct conversation"]["call_button_label"] == "Call bob"
    # The call UI and the SDK's calls module load on first use, not with the first screen.
    loaded = steps["direct conversation"]["loaded"]
    assert "/web/app/calls.js" in loaded, loaded
    assert "/web/app/callview.js" not in loaded and "/web/sdk/calls.js" not in loaded, loaded
    assert steps["calling"]["status"] == "Calling bob…"
    assert steps["calling"]["focused"] == "call-leave"  # the keyboard is in the call view
    ringing = steps["ringing on both devices"]
    assert "alice is calling" in ringing["sheet"] and "Video call" in ringing["sheet"]
    assert ringing["focused"] == "accept"  # the sheet takes the keyboard
    assert steps["answered elsewhere"]["laptop_sheets"] == 0
    media = steps["1:1 media"]
    assert media["alice"]["decoded"]["bob"] > 0 and media["bob"]["decoded"]["alice"] > 0
    assert any(width > 0 for width in media["alice"]["shown"])
    dropped = steps["network dropped"]
    assert "Reconnecting" in dropped["status_down"] and dropped["status_after"] == "2 in the call"
    assert dropped["bob_sees"] == "microphone off" and dropped["alice_mic_pressed"] == "true"
    assert dropped["bob_decoded"]["alice"] > media["bob"]["decoded"]["alice"]
    before, after = dropped["alice_participant"]
    assert before == after  # resumed as the same participant, not joined again
    mid_call = steps["language mid-call"]
    assert mid_call["status"] == "2 人在通话中" and mid_call["leave"] == "离开", mid_call
    assert mid_call["own"].endswith("\uff08你\uff09") and "麦克风" in mid_call["mic_off"], mid_call
    assert "alice 来电" in steps["language while ringing"]["sheet"]
    assert "接听" in steps["language while ringing"]["sheet"]
    assert any("Video call with bob ended" in t for t in steps["hung up"]["alice_chat"])
    declined = steps["declined"]
    assert "bob declined the call" in declined["alice_status"]
    assert any("bob declined your video call" in t for t in declined["alice_chat"])
    assert any("You declined a video call from alice" in t for t in declined["bob_chat"])
    missed = steps["missed"]
    assert "bob did not answer" in missed["alice_status"]
    assert any("Missed video call from alice" in t for t in missed["bob_chat"])
    assert any("You answered a video call from alice" in t for t in steps["declined"]["bob_chat"])
    crossed = steps["called each other"]
    assert crossed["alice_decoded"]["bob"] > 0 and crossed["bob_decoded"]["alice"] > 0
    assert crossed["missed"][0] == crossed["missed"][1]  # the call given up is no missed call
    # A reload while it rings cancels the call: the callee stops ringing at once.
    assert steps["caller reloaded"]["laptop_stops"] == ["cancelled"]
    assert steps["caller reloaded"]["alice_view"] == 0
    missed_zh = "未接来电\uff1aalice 的视频通话"  # the colon is a Chinese (fullwidth) one
    assert any(missed_zh in t for t in steps["chinese"]["bob_chat"])


def test_a_group_call_from_the_app_each_decodes_the_others_sees_a_mute_and_speaker_layout(
    call_node: NamespacedNode, tmp_path: Path
) -> None:
    steps = _run(call_node, tmp_path, "group")
    seen = steps["group media"]["seen"]
    for name, others in (("alice", "bob carol"), ("bob", "alice carol"), ("carol", "alice bob")):
        for other in others.split():
            assert seen[name]["decoded"][other] > 0, (name, other, seen[name])
        assert sum(1 for width in seen[name]["shown"] if width > 0) >= 2, seen[name]
    assert steps["group media"]["carol_first"] == "local"
    muted = steps["bob muted"]
    assert muted["marks"] == {"alice": "microphone off", "carol": "麦克风已关闭"}
    assert muted["bob_button_pressed"] == "true"
    layout = steps["speaker layout"]
    told = {track.split(":")[0] for track, _ in layout["told"]}
    assert told == {seen["bob"]["participant"], seen["carol"]["participant"]}, layout["told"]
    # The loudest is featured (alice's own tile when she is), else another participant.
    assert layout["featured"] in {seen["bob"]["participant"], seen["carol"]["participant"], "local"}
    assert set(layout["qualities"]) <= {"good", "fair", "poor"} and len(layout["qualities"]) == 3
    minimised = steps["minimised"]
    assert minimised["during"]["minimised"] and not minimised["during"]["inert"]
    assert minimised["during"]["focused"] == "composer-text" and minimised["during"]["tiles"] == 0
    restored = minimised["after"]
    assert not restored["minimised"] and restored["inert"] and restored["focused"] == "call-leave"
    switched = steps["microphone switched"]
    assert switched["options"] >= 2 and switched["in_use"] == "live"
    before, after = switched["heard"]
    assert after > before
    screen = steps["screen shared"]
    assert screen["widths"]["bob"] > 0 and screen["widths"]["carol"] > 0
    # The node would have kept her for call_resume_s (30 s); STEP_TIMEOUT_S is 20.
    assert steps["page left"]["status"] == "2 in the call", steps["page left"]
    assert screen["alice_button"] == "true"
    assert screen["bob_featured"] == f"{seen['alice']['participant']}:screen"
    assert "local:screen" in screen["alice_tiles"], screen["alice_tiles"]


def test_a_group_call_shows_as_a_notice_and_a_join_button_in_the_group(
    call_node: NamespacedNode, tmp_path: Path
) -> None:
    steps = _run(call_node, tmp_path, "group_notice")
    notices = steps["notices"]
    assert notices["bob"].startswith("alice started a call in Standup")
    assert notices["carol"].startswith("alice 在 Standup 发起了通话")
    joined = steps["joined"]
    assert joined["bob"]["decoded"]["alice"] > 0 and joined["carol"]["decoded"]["bob"] > 0
    assert joined["carol_notices_after_open"] == 0
    ended = steps["ended"]
    assert any("Joined: alice, bob, carol" in text for text in ended["alice_chat"])
    assert ended["join_buttons"] == 0


@pytest.fixture
def selective_node(netns: NetworkNamespace, tmp_path: Path) -> Iterator[NamespacedNode]:
    settings = {"HUDDLE_SELECTIVE_FORWARDING_ABOVE": "2", "HUDDLE_VIDEO_LAST_N": "1"}
    with namespaced_node(netns, tmp_path, settings) as node:
        yield node


def test_a_tile_whose_video_selection_leaves_out_says_so_and_rates_no_bad_network(
    selective_node: NamespacedNode, tmp_path: Path
) -> None:
    """In a call larger than the node forwards every video of, the participants it leaves
    out show their initial and why (not a black or frozen picture), and no bad network."""
    steps = _run(selective_node, tmp_path, "selection")
    left_out = steps["left out by selection"]
    assert left_out["decoded"]["bob"] > 0, left_out
    assert "not among the latest speakers" in left_out["carol_text"], left_out
    assert left_out["carol_placeholder"] and not left_out["bob_placeholder"], left_out
    assert left_out["carol_quality"] != "poor", left_out

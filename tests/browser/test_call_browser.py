"""Interop with a real browser: Chromium publishes through the SFU, another Chromium page
subscribes and decodes. Both pages are huddle/web/call.html. Then both pages start their
media over (sfu.restart, what a failed connection makes them do) and media flows again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import NamespacedNode, run_driver
from tests.helpers import make_token

pytestmark = pytest.mark.browser

DRIVER_TIMEOUT_S = 40.0
SAMPLE_S = 2.0


def _inbound(stats: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [s for s in stats if s["type"] == "inbound-rtp" and s.get("kind") == kind]
    assert len(found) == 1, f"expected one inbound {kind} stream, got {found}"
    return found[0]


def test_chromium_publishes_and_another_chromium_decodes_and_both_restart(
    ns_node: NamespacedNode, tmp_path: Path
) -> None:
    room = "browser-interop"
    screenshot = tmp_path / "subscriber.png"
    result_path = tmp_path / "driver.json"
    result = run_driver(
        ns_node.ns,
        result_path,
        DRIVER_TIMEOUT_S + 10,
        "--base-url",
        ns_node.url,
        "--room",
        room,
        "--publisher-token",
        make_token("alice", rooms=[room]),
        "--subscriber-token",
        make_token("bob", rooms=[room], can_publish=False),
        "--screenshot",
        str(screenshot),
        "--profile-dir",
        str(tmp_path / "chromium-profile"),
        "--timeout-s",
        str(DRIVER_TIMEOUT_S),
        "--sample-s",
        str(SAMPLE_S),
        "--restart",
    )
    diagnostics = {k: v for k, v in result.items() if not k.endswith("_stats")}
    context = (
        f"driver: {json.dumps(diagnostics, indent=1)[-6000:]}\n"
        f"node log:\n{ns_node.log_tail()}\n(full result: {result_path})"
    )
    assert result["ok"], context

    before, after = result["subscriber_stats"]
    video0, video1 = _inbound(before, "video"), _inbound(after, "video")
    audio0, audio1 = _inbound(before, "audio"), _inbound(after, "audio")
    assert video1["framesDecoded"] > video0["framesDecoded"], (video0, video1)
    assert video1.get("frameWidth", 0) > 0, video1
    assert audio1["packetsReceived"] > audio0["packetsReceived"], (audio0, audio1)
    pairs = [s for s in after if s["type"] == "candidate-pair"]
    assert any(pair["state"] == "succeeded" for pair in pairs), pairs

    # Forwarding never transcodes: what the subscriber decodes is what Chromium sent.
    codecs = {s["id"]: s["mimeType"] for s in after if s["type"] == "codec"}
    assert codecs.get(video1.get("codecId", "")) == "video/VP8", (codecs, video1)
    assert codecs.get(audio1.get("codecId", "")) == "audio/opus", (codecs, audio1)

    assert screenshot.is_file(), context
    assert screenshot.stat().st_size > 10_000, f"screenshot only {screenshot.stat().st_size} bytes"

    # Media restarts (huddle.restartMedia(), as on a failed connection): both pages keep their
    # place in the room and get their media going again on new connections.
    before = result["before_restart_state"]
    for name in ("publisher", "subscriber"):
        state = result[f"{name}_state"]
        assert state["state"] != "failed" and state["error"] is None, state
        assert state["restarts"] == 1, state
        assert state["participant"] == before[name]["participant"], (before[name], state)
        assert not [line for line in state["log"] if line.endswith(" left")], state["log"]
    # The publisher published again: its new tracks came on new sections of the subscriber's
    # connection and decoded there (the driver waited for that).
    old_mids = {s.get("mid") for s in _inbound_before_restart(result)}
    new = [s for s in result["after_publisher_restart_stats"] if s["type"] == "inbound-rtp"]
    assert any(s.get("mid") not in old_mids and s.get("framesDecoded", 0) > 0 for s in new), new
    # The subscriber's new connection is to a new SFU connection, and decodes on it.
    assert result["subscriber_state"]["subscriberUfrag"] != before["subscriber"]["subscriberUfrag"]
    first, second = result["restart_stats"]
    video0, video1 = _inbound(first, "video"), _inbound(second, "video")
    audio0, audio1 = _inbound(first, "audio"), _inbound(second, "audio")
    assert video1["framesDecoded"] > video0["framesDecoded"] > 0, (video0, video1)
    assert video1.get("frameWidth", 0) > 0, video1
    assert audio1["packetsReceived"] > audio0["packetsReceived"], (audio0, audio1)


def _inbound_before_restart(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in result["subscriber_stats"][-1] if s["type"] == "inbound-rtp"]


def test_chromium_publishes_three_simulcast_layers_of_one_camera_and_shares_its_screen(
    ns_node: NamespacedNode, tmp_path: Path
) -> None:
    """The call page publishes its camera as three layers (the SDK's default); the SFU takes
    them as one source, forwards one layer to the subscriber, and switches to the smallest
    when the subscriber's tile is that small. Then the publisher mutes its microphone and
    shares its screen with the page's buttons: the subscriber sees both."""
    room = "browser-simulcast"
    result_path = tmp_path / "driver.json"
    result = run_driver(
        ns_node.ns,
        result_path,
        DRIVER_TIMEOUT_S + 10,
        "--base-url",
        ns_node.url,
        "--room",
        room,
        "--publisher-token",
        make_token("alice", rooms=[room]),
        "--subscriber-token",
        make_token("bob", rooms=[room], can_publish=False),
        "--screenshot",
        str(tmp_path / "subscriber.png"),
        "--profile-dir",
        str(tmp_path / "chromium-profile"),
        "--timeout-s",
        str(DRIVER_TIMEOUT_S),
        "--sample-s",
        "0.5",
        "--simulcast",
        "--controls",
    )
    diagnostics = {k: v for k, v in result.items() if not k.endswith("_stats")}
    context = (
        f"driver: {json.dumps(diagnostics, indent=1)[-6000:]}\n"
        f"node log:\n{ns_node.log_tail()}\n(full result: {result_path})"
    )
    assert result["ok"], context
    sim = result["simulcast"]
    publisher = result["publisher_state"]["participant"]

    # Three layers of one source, declared smallest first.
    layers = sim["publisher"]["layers"]
    assert len(layers) == 3, layers
    assert {x["source"] for x in layers.values()} == {"cam"}, layers
    by_quality = sorted(layers.values(), key=lambda x: x["quality"])
    assert [x["quality"] for x in by_quality] == [0, 1, 2], layers
    heights = [x["height"] for x in by_quality]
    assert heights[0] < heights[1] < heights[2], layers

    # The SFU has a published track per layer, each a camera video track.
    published = sim["publisher_server_stats"]["published"]
    layer_tracks = {f"{publisher}:{mid}" for mid in layers}
    video = {t["track"]: t for t in published if t["kind"] == "video"}
    assert set(video) == layer_tracks, published
    assert all(t["source"] == "camera" for t in video.values()), published
    assert any(t["packets"] > 0 for t in video.values()), published

    # The subscriber is offered the source once, and gets one layer of it at a time.
    [offered] = [t for t in sim["subscriber"]["tracks"] if t["kind"] == "video"]
    assert offered["track"] == f"{publisher}:cam", sim["subscriber"]
    [sub] = [t for t in sim["subscriber_server_stats"]["subscribed"] if t["kind"] == "video"]
    assert sub["track"] == f"{publisher}:cam" and sub["layer"] is not None, sub
    # A tile as small as the smallest layer: the SFU switches to it and the browser decodes it.
    [after] = [
        t for t in sim["subscriber_server_stats_after"]["subscribed"] if t["kind"] == "video"
    ]
    assert (after["layer"], after["height"]) == (0, heights[0]), after
    assert 0 < sim["height_after"] <= heights[0] < sim["height_before"], sim

    # Mute and screen share by the buttons: the state reached the subscriber (the driver
    # waited for it and for decoded screen frames), the screen came as a track of its own.
    controls = result["controls"]
    assert controls["publisher_audio_enabled"] == [False], controls
    pressed = {b[0]: b[1] for b in controls["publisher_buttons"]}
    assert pressed["mute-mic"] == "true" and pressed["share-screen"] == "true", controls
    screens = [t for t in controls["subscriber_tracks"]["tracks"] if t["source"] == "screen"]
    assert len(screens) == 1 and screens[0]["kind"] == "video", controls
    assert screens[0]["track"] != offered["track"], controls
    # A camera switch puts new tracks on the same sections (every layer), with no new offer
    # to anyone: the subscriber answered no more offers than before it (the driver waited
    # for the camera to go on decoding).
    switch = controls["switch"]
    assert [mid for mid, _ in switch["before"]] == [mid for mid, _ in switch["after"]], switch
    assert len(switch["after"]) == 3, switch
    assert not {t for _, t in switch["before"]} & {t for _, t in switch["after"]}, switch
    assert controls["offers_after_switch"] == controls["offers_before_switch"], controls
    # Sharing stopped by the button: the subscriber was offered the screen's section
    # inactive (the driver waited for its tile to go), and still gets the camera.
    stopped = controls["after_stop"]
    assert stopped["publisher_sharing"] is None, stopped
    sources = sorted(t["source"] for t in stopped["subscriber_tracks"]["tracks"])
    assert sources == ["camera", "microphone"], stopped


def test_three_chromium_pages_each_decode_both_others(
    ns_node: NamespacedNode, tmp_path: Path
) -> None:
    """Three users in one room, each publishing camera (simulcast, the page's default) and
    microphone from a page of its own: every page decodes video and receives audio from both
    others."""
    room = "browser-three"
    result_path = tmp_path / "driver.json"
    tokens = [
        arg
        for identity in ("alice", "bob", "carol")
        for arg in ("--participant-token", make_token(identity, rooms=[room]))
    ]
    result = run_driver(
        ns_node.ns,
        result_path,
        DRIVER_TIMEOUT_S + 10,
        "--base-url",
        ns_node.url,
        "--room",
        room,
        *tokens,
        "--screenshot",
        str(tmp_path / "page.png"),
        "--profile-dir",
        str(tmp_path / "chromium-profile"),
        "--timeout-s",
        str(DRIVER_TIMEOUT_S),
        "--sample-s",
        str(SAMPLE_S),
    )
    diagnostics = {k: v for k, v in result.items() if k != "mesh"}
    context = (
        f"driver: {json.dumps(diagnostics, indent=1)[-6000:]}\n"
        f"node log:\n{ns_node.log_tail()}\n(full result: {result_path})"
    )
    assert result["ok"], context
    mesh = result["mesh"]
    participants = {page["participant"] for page in mesh.values()}
    assert len(participants) == 3, mesh.keys()

    for name, page in mesh.items():
        others = participants - {page["participant"]}
        (first, second) = page["snapshots"]
        senders = {t["mid"]: t["participant"] for t in second["tracks"]}
        by_sender: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]] = {}
        for before, after in _matched_inbound(first["stats"], second["stats"]):
            sender = senders.get(after.get("mid", ""))
            if sender is not None:
                by_sender[(sender, after["kind"])] = (before, after)
        for other in others:
            v0, v1 = by_sender[(other, "video")]
            a0, a1 = by_sender[(other, "audio")]
            assert v1["framesDecoded"] > v0["framesDecoded"] > 0, (name, other, v0, v1)
            assert v1.get("frameWidth", 0) > 0, (name, other, v1)
            assert a1["packetsReceived"] > a0["packetsReceived"], (name, other, a0, a1)
        # A page is never sent its own media.
        assert page["participant"] not in set(senders.values()), (name, second["tracks"])
        shot = Path(page["screenshot"])
        assert shot.is_file() and shot.stat().st_size > 10_000, shot
        state = result[f"{name}_state"]
        assert state["state"] != "failed" and state["error"] is None, state


def _matched_inbound(
    before: list[dict[str, Any]], after: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The inbound streams of two snapshots of one connection, paired by section."""
    earlier = {s["mid"]: s for s in before if s["type"] == "inbound-rtp" and "mid" in s}
    return [
        (earlier[s["mid"]], s)
        for s in after
        if s["type"] == "inbound-rtp" and s.get("mid") in earlier
    ]

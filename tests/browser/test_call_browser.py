"""Interop with a real browser: Chromium publishes through the SFU, another Chromium page
subscribes and decodes. Both pages are huddle/web/call.html."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import NamespacedNode, run_driver
from tests.helpers import make_token

pytestmark = pytest.mark.browser

DRIVER_TIMEOUT_S = 25.0
SAMPLE_S = 2.0


def _inbound(stats: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [s for s in stats if s["type"] == "inbound-rtp" and s.get("kind") == kind]
    assert len(found) == 1, f"expected one inbound {kind} stream, got {found}"
    return found[0]


def test_chromium_publishes_and_another_chromium_decodes(
    ns_node: NamespacedNode, tmp_path: Path
) -> None:
    room = "browser-interop"
    screenshot = tmp_path / "subscriber.png"
    result_path = tmp_path / "driver.json"
    result = run_driver(
        ns_node.ns,
        result_path,
        DRIVER_TIMEOUT_S + 10,
        "--base-url", ns_node.url,
        "--room", room,
        "--publisher-token", make_token("alice", rooms=[room]),
        "--subscriber-token", make_token("bob", rooms=[room], can_publish=False),
        "--screenshot", str(screenshot),
        "--profile-dir", str(tmp_path / "chromium-profile"),
        "--timeout-s", str(DRIVER_TIMEOUT_S),
        "--sample-s", str(SAMPLE_S),
    )  # fmt: skip
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

"""A screen share watched over a short downlink: the SFU sends the viewer a lower frame-rate
layer of the screen at its full resolution, never a smaller picture (issue 14: "Screen share
keeps resolution and drops frame rate instead"), and goes on doing so once the link is free.

The node runs in the test's namespace, the two Chromium pages on the host side of its veth
(tests/browser/screen_driver.py); only the UDP port of the viewer's subscriber connection is
held to ``CAP_KBIT``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest

from tests.browser.harness import NamespacedNode, run_driver

pytestmark = pytest.mark.browser

# Below the camera's and the screen's top layers together (about 340 + 430 kbit/s here),
# above the screen's 5-frame layer and the audio.
CAP_KBIT: Final = 400
DRIVER_TIMEOUT_S: Final = 150.0
SAMPLES: Final = ("free", "capped", "lifted")
MIN_FULL_FPS: Final = 12.0  # the fake capture runs at 20-30
# The capped rate at most this share of the free one (measured: 3-5 fps against 20).
SLOWER: Final = 0.5
# The screen's top layer sent again at most this long after the cap is lifted (measured in
# six runs: 1.5-8.8 s, a layer rising per probe; a fixed 11 s wait once caught it a layer
# short). The driver waits up to its step timeout (20 s) and says how long it took.
MAX_BACK_S: Final = 15.0


def test_a_short_downlink_gets_the_screen_at_full_resolution_and_fewer_frames(
    ns_node: NamespacedNode, tmp_path: Path
) -> None:
    ns = ns_node.ns
    result_path = tmp_path / "screen.json"
    shots = tmp_path / "shots"
    result = run_driver(
        ns, result_path, DRIVER_TIMEOUT_S,
        "--base-url", ns_node.url, "--netns", ns.name, "--dev", ns.interface,
        "--cap-kbit", str(CAP_KBIT), "--shots", str(shots),
        module="tests.browser.screen_driver", inside=False,
    )  # fmt: skip
    steps = {s["step"]: s for s in result["steps"]}
    context = f"driver: {json.dumps(result, indent=1)[-8000:]}\nnode log:\n{ns_node.log_tail()}"
    assert result["ok"], context
    shown = ("fps", "heights", "layers", "decoding", "encoded", "server")
    figures = {k: {x: steps[k][x] for x in shown} for k in SAMPLES}
    waits = {k: steps["free"][k] for k in ("uplink_s", "top_held_s")}
    waits["back_s"] = steps["lifted"]["back_s"]
    print("screen figures:", figures, "free after:", waits, "back:", steps["back"]["rows"])

    def screen(step: str) -> dict[str, Any]:
        return next(s for s in steps[step]["server"] if s["track"].endswith(":screen"))

    # A free link: the top layer all along (the driver samples it once the SFU has sent it
    # for a few seconds on end), at the capture's rate.
    free = steps["free"]
    height = free["heights"]
    assert len(height) == 1 and height[0] > 0, figures
    assert set(free["layers"]) == {2} and screen("free")["layer"] == 2, figures
    assert free["fps"] >= MIN_FULL_FPS, figures
    # Capped: a lower layer of the same height, decoded at the same size, fewer frames a
    # second but still moving; the camera gave way first.
    capped = steps["capped"]
    assert not screen("capped")["paused"], figures
    assert screen("capped")["layer"] < 2, figures
    assert screen("capped")["height"] == screen("free")["height"], figures
    assert capped["heights"] == height, figures
    assert 0 < capped["fps"] <= SLOWER * free["fps"], figures
    # The link free again: the screen at its size, back at its top layer within seconds
    # (padding probes find the room even though what the screen sends comes in a few large
    # frames).
    assert not screen("lifted")["paused"] and steps["lifted"]["heights"] == height, figures
    assert screen("lifted")["layer"] == 2, figures
    # How it came back, poll by poll: s since the lift, the screen's layer, the camera's,
    # the SFU's estimate (kbit/s), its probes.
    assert steps["lifted"]["back_s"] <= MAX_BACK_S, (waits, steps["back"]["rows"])

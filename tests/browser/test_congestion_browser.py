"""A three-user call in the web app where one user's downlink is capped far below what the
others' video wants: the SFU pauses video to that user (who sees a placeholder in its tiles,
and keeps hearing both others almost whole), the two uncapped users go on receiving each
other's and the capped one's video, and video comes back to the capped user within seconds
of the cap being lifted.

The node runs in the test's namespace, the three Chromium pages on the host side of its veth
(tests/browser/congestion_driver.py), so that everything the node sends them crosses the
namespace's end of the veth; there only the UDP port of the capped user's subscriber
connection is held to ``CAP_KBIT``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

import pytest

from sfu.downlink import POLICY
from tests.browser.harness import NamespacedNode, run_driver

pytestmark = pytest.mark.browser

# Below the others' lowest layers and audio together (2 x 150 + 2 x ~40 kbit/s): some video
# must pause; above both audio streams, which must get through.
CAP_KBIT: Final = 150
SAMPLE_S: Final = 8.0
DRIVER_TIMEOUT_S: Final = 150.0
# With every video paused the SFU learns that the link has room again only by probing, and
# each padding probe that failed under the cap doubles the wait before the next (up to
# max_padding_probe_s): the bound allows for that wait, the probe's feedback, a key frame
# and its decoding in a loaded test machine's Chromium. Measured: 1 s to the first video,
# 3 s to all.
RECOVER_BOUND_S: Final = POLICY.max_padding_probe_s + 3.0
# Every video: measured 2.4-10 s (a video just resumed sometimes reads loss in its first
# receiver report, which holds the next one back until the loss cap grows out).
ALL_RECOVER_BOUND_S: Final = RECOVER_BOUND_S + 9.0
# Under the cap, probes are padding (60-200 ms each, every 1-2 s): audio goes through
# almost whole (measured 0-0.4 % concealed; what the issue wants is under 2 %).
CONCEALED_MAX: Final = 0.02
# Beyond that, the uncapped users' audio says the machine is too busy for this test.
MACHINE_CONCEALED_MAX: Final = 0.10
MIN_FPS: Final = 10.0


def _delta(start: dict[str, Any], end: dict[str, Any], kind: str, who: str, key: str) -> float:
    return float(end[kind][who][key] - start[kind][who][key])


def test_a_capped_downlink_pauses_video_to_that_user_alone_and_it_comes_back(
    ns_node: NamespacedNode, tmp_path: Path
) -> None:
    ns = ns_node.ns
    result_path = tmp_path / "congestion.json"
    shots = tmp_path / "shots"
    result = run_driver(
        ns, result_path, DRIVER_TIMEOUT_S,
        "--base-url", ns_node.url, "--netns", ns.name, "--dev", ns.interface,
        "--cap-kbit", str(CAP_KBIT), "--sample-s", str(SAMPLE_S), "--shots", str(shots),
        module="tests.browser.congestion_driver", inside=False,
    )  # fmt: skip
    steps = {s["step"]: s for s in result["steps"]}
    context = (
        f"driver: {json.dumps(result, indent=1)[-8000:]}\n"
        f"node log:\n{ns_node.log_tail()}\n(full result: {result_path})"
    )
    assert result["ok"], context

    # The capped user: sfu.paused arrived, a tile shows the placeholder (not a frozen frame)
    # and a poor network, and its audio element goes on playing.
    window = steps["window"]
    start, end = window["start"], window["end"]
    bob = end["bob"]
    assert bob["events"] and bob["paused"], context
    shown = [t for t in bob["tiles"] if t["placeholder"]]
    assert shown, context
    for tile in shown:
        assert "Video paused: weak connection" in tile["placeholder"], tile
        assert not tile["video_visible"], tile
        assert tile["quality"] == "poor", tile
    assert all(t["audio_playing"] for t in bob["tiles"]), bob["tiles"]
    assert any(s["downlink_paused"] for s in window["bob_server"]), window["bob_server"]
    # Chromium took transport-wide congestion control: the SFU estimates bob's downlink
    # itself, and probed it with padding while video was paused.
    assert {s["estimator"] for s in window["bob_server"]} == {"transport-cc"}, window
    assert max(s["probes"] for s in window["bob_server"]) > 0, window["bob_server"]

    figures: dict[str, Any] = {"paused_after_s": steps["bob paused"]["after_s"]}
    for other in ("alice", "carol"):
        samples = _delta(start["bob"], end["bob"], "audio", other, "samples")
        concealed = _delta(start["bob"], end["bob"], "audio", other, "concealed")
        figures[f"bob_hears_{other}_concealed"] = round(concealed / max(samples, 1), 4)
        assert samples > 0, figures
    # The uncapped users: nothing paused for them, and every remote video decodes at a good
    # frame rate meanwhile (the capped one never lowers what they receive).
    elapsed = {n: (end[n]["t"] - start[n]["t"]) / 1000 for n in ("alice", "carol")}
    for name, others in (("alice", ("bob", "carol")), ("carol", ("alice", "bob"))):
        assert not end[name]["events"] and not end[name]["paused"], end[name]
        assert not any(t["placeholder"] for t in end[name]["tiles"]), end[name]["tiles"]
        for other in others:
            frames = _delta(start[name], end[name], "video", other, "frames")
            figures[f"{name}_sees_{other}_fps"] = round(frames / elapsed[name], 1)
    lifted = steps["lifted"]
    figures["first_video_back_s"] = lifted["first_back_s"]
    figures["all_video_back_s"] = lifted["all_back_s"]
    # What the machine itself costs the audio: the uncapped users hearing each other (a
    # machine kept busy by three browsers and other runs conceals for everyone: measured
    # 4.5-5.8 % for bob at load 21, when both codes gave 0-1 % at load 10).
    for name, other in (("alice", "carol"), ("carol", "alice")):
        samples = _delta(start[name], end[name], "audio", other, "samples")
        concealed = _delta(start[name], end[name], "audio", other, "concealed")
        figures[f"machine_{name}_hears_{other}_concealed"] = round(concealed / max(samples, 1), 4)
    machine = max(v for k, v in figures.items() if k.startswith("machine_"))
    print("congestion figures:", figures)
    assert machine < MACHINE_CONCEALED_MAX, figures
    for key, value in figures.items():
        if key.startswith("bob_") and key.endswith("_concealed"):
            assert value < CONCEALED_MAX + machine, figures
        if key.endswith("_fps"):
            assert value >= MIN_FPS, figures

    # The cap lifted: paused video decodes again in its tile, the placeholder gone, in time.
    assert lifted["paused_at_lift"], context
    assert lifted["first_back_s"] is not None, f"{figures}\n{lifted['trace']}"
    assert lifted["first_back_s"] <= RECOVER_BOUND_S, f"{figures}\n{lifted['trace']}"
    assert lifted["all_back_s"] is not None, f"{figures}\n{lifted['trace']}"
    assert lifted["all_back_s"] <= ALL_RECOVER_BOUND_S, f"{figures}\n{lifted['trace']}"
    for name in ("bob-capped", "bob-recovered"):
        assert (shots / f"{name}.png").stat().st_size > 0

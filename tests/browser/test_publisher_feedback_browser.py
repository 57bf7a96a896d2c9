"""A Chromium publisher whose uplink is capped below what its camera's three simulcast
layers and its microphone want: the SFU's transport-wide congestion feedback lets
Chromium's own estimator find the cap, so it sends below it and its audio still reaches a
subscriber almost whole, instead of flooding the link and losing audio with the video.

The node runs in the test's namespace; both Chromiums run on the host side of its veth, so
that the publisher's media crosses the veth, whose host-to-namespace direction gets a
``tc tbf`` cap (only the namespace's own veth is touched)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import ROOT, NamespacedNode
from tests.helpers import make_token

pytestmark = pytest.mark.browser

CAP_KBIT = 400
# The camera: noise, which no encoder can squeeze, so that the publisher's two layers that
# the subscriber takes (up to 150 + 500 kbit/s) want more than the cap.
CAMERA = (640, 360, 10)  # width, height, frames (looped)
# A bucket of a few full packets: a short queue at the cap, as a home router's.
BURST_BYTES = 8_000
QUEUE_MS = 60
SETTLE_S = 12.0
SAMPLE_S = 10.0
DRIVER_TIMEOUT_S = 60.0  # to first media: generous, the machine may be busy


def _noise_clip(path: Path) -> Path:
    width, height, frames = CAMERA
    header = f"YUV4MPEG2 W{width} H{height} F30:1 Ip A1:1 C420jpeg\n".encode()
    with path.open("wb") as clip:
        clip.write(header)
        for _ in range(frames):
            clip.write(b"FRAME\n" + os.urandom(width * height * 3 // 2))
    return path


def _sent_bits(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> int:
    def total(stats: list[dict[str, Any]]) -> int:
        return sum(
            int(s.get("bytesSent", 0)) + int(s.get("headerBytesSent", 0))
            for s in stats
            if s["type"] == "outbound-rtp"
        )

    return (total(after) - total(before)) * 8


def _audio(stats: list[dict[str, Any]]) -> dict[str, Any]:
    (audio,) = [s for s in stats if s["type"] == "inbound-rtp" and s.get("kind") == "audio"]
    return audio


def _available_outgoing(stats: list[dict[str, Any]]) -> float | None:
    for s in stats:
        if s["type"] == "candidate-pair" and s.get("nominated") and s.get("state") == "succeeded":
            value = s.get("availableOutgoingBitrate")
            return float(value) if value is not None else None
    return None


def test_a_publisher_behind_a_capped_uplink_sends_below_the_cap_and_its_audio_arrives(
    ns_node: NamespacedNode, tmp_path: Path
) -> None:
    ns = ns_node.ns
    subprocess.run(
        ["tc", "qdisc", "replace", "dev", ns.host_interface, "root", "tbf",
         "rate", f"{CAP_KBIT}kbit", "burst", str(BURST_BYTES), "latency", f"{QUEUE_MS}ms"],
        check=True, capture_output=True, timeout=10,
    )  # fmt: skip
    room = "uplink-cap"
    result_path = tmp_path / "driver.json"
    proc = subprocess.run(
        [
            sys.executable, "-m", "tests.browser.uplink_driver",
            "--base-url", ns_node.url, "--room", room,
            "--publisher-token", make_token("alice", rooms=[room]),
            "--subscriber-token", make_token("bob", rooms=[room], can_publish=False),
            "--screenshot", str(tmp_path / "subscriber.png"),
            "--profile-dir", str(tmp_path / "chromium-profile"),
            "--out", str(result_path),
            "--camera-file", str(_noise_clip(tmp_path / "noise.y4m")),
            "--timeout-s", str(DRIVER_TIMEOUT_S),
            "--settle-s", str(SETTLE_S), "--sample-s", str(SAMPLE_S),
        ],
        cwd=ROOT, capture_output=True, timeout=DRIVER_TIMEOUT_S + SETTLE_S + SAMPLE_S + 30,
    )  # fmt: skip
    assert result_path.exists(), proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(result_path.read_text())
    context = f"{json.dumps(result.get('error'))}\nnode log:\n{ns_node.log_tail()}"
    assert result["ok"], context

    (pub0, pub1), (sub0, sub1) = result["publisher_stats"], result["subscriber_stats"]
    sent_kbit_s = _sent_bits(pub0, pub1) / SAMPLE_S / 1000
    available = _available_outgoing(pub1)
    audio0, audio1 = _audio(sub0), _audio(sub1)
    samples = audio1["totalSamplesReceived"] - audio0["totalSamplesReceived"]
    concealed = audio1["concealedSamples"] - audio0["concealedSamples"]
    figures = {
        "sent_kbit_s": round(sent_kbit_s),
        "available_outgoing_kbit_s": available and round(available / 1000),
        "audio_concealed": round(concealed / max(samples, 1), 4),
        "audio_samples": samples,
    }
    print("uplink figures:", figures)
    # What the SFU answered: the publisher numbers its packets transport-wide and expects
    # transport-cc feedback for them.
    answer = result["answer_sdp"]
    assert "transport-wide-cc-extensions-01" in answer, answer
    assert "transport-cc" in answer, answer
    assert samples > 0, figures
    assert sent_kbit_s < CAP_KBIT, figures
    assert sent_kbit_s > CAP_KBIT / 4, figures  # it still uses the link
    # The estimate itself swings around the cap (probing above it, backing off), so one
    # reading of it proves nothing: it is only reported.
    assert concealed / samples < 0.01, figures

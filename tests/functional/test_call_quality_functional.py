"""The call quality benchmark runs end to end in its quick mode (two Chromium participants,
each capped at 1 Mbit/s both ways) and writes its figures; its lossy link drops UDP at the rate
asked and nothing else; everything either made is gone after."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.call_net import network
from tests.browser.harness import require_browser_environment

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RUN_TIMEOUT_S = 240
CAP_KBPS = 1000
# What crosses a tbf in a few seconds can pass its rate by the bucket (4,000 bytes) and the
# window's edges; nothing more.
CAP_SLACK = 1.15


def test_quick_run_writes_summary_and_leaves_nothing(tmp_path: Path) -> None:
    require_browser_environment()
    out = tmp_path / "call_quality.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.call_quality", "--quick", "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-4000:]
    assert "freeze ratio, 1 Mbit/s" in stdout, stdout

    doc = json.loads(out.read_text())
    assert doc["benchmark"] == "call_quality"
    assert doc["config"]["quick"] is True
    summary = doc["summary"]
    for key in ("freeze_ratio_1mbit", "audio_concealed_1mbit", "rtx_ratio_1mbit"):
        assert 0 <= summary[key] <= 1, (key, summary)
    assert 0 < summary["first_frame_ms_p50"] < 30_000, summary
    # The 300 kbit/s scenario is not part of the quick run: there, but unmeasured.
    assert "audio_concealed_300kbit" in summary
    assert summary["audio_concealed_300kbit"] is None
    assert set(summary["goals"]) >= {"freeze ratio, 1 Mbit/s", "join to first frame p50, ms"}

    [scenario] = doc["scenarios"].values()
    people = scenario["participants"]
    assert [p["index"] for p in people] == [1, 2]
    for p in people:
        assert p["capped"], p
        [video] = p["videos"]
        assert video["fps"] > 0, p
        assert video["height"] > 0, p
        [audio] = p["audios"]
        assert audio["samples"] > 0, p
        assert 0 < p["down_kbps"] <= CAP_KBPS * CAP_SLACK, p
        assert 0 < p["up_kbps"] <= CAP_KBPS * CAP_SLACK, p
        assert p["sfu_forwarded"] > 0, p
        assert p["browser_cpu_cores"] > 0, p
    assert people[0]["videos"][0]["from"] == people[1]["participant"]
    assert people[1]["videos"][0]["from"] == people[0]["participant"]
    # Only the second joined while someone published: the first's wait is not counted.
    assert people[0]["first_frame_ms"] is None
    assert people[1]["first_frame_ms"] == summary["first_frame_ms_p50"]

    # No namespace, link or process of the run is left.
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    assert f"huddle-cq-{proc.pid}" not in netns.stdout, netns.stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True)
    assert f"cq{proc.pid % 10_000_000}" not in links.stdout, links.stdout


ECHO_SERVER = """
import socket, sys
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind((sys.argv[1], 9999))
tcp = socket.create_server((sys.argv[1], 9998))
udp.settimeout(20)
tcp.settimeout(20)
conn, _ = tcp.accept()
received = 0
while received < int(sys.argv[2]):
    chunk = conn.recv(65536)
    if not chunk:
        break
    received += len(chunk)
conn.sendall(str(received).encode())
conn.close()
while True:
    try:
        data, peer = udp.recvfrom(2048)
    except TimeoutError:
        break
    udp.sendto(data, peer)
"""

ECHO_CLIENT = """
import socket, sys
host, size, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tcp = socket.create_connection((host, 9998), timeout=20)
tcp.sendall(b"x" * size)
print(tcp.recv(64).decode())
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.settimeout(0.1)
answered = 0
for i in range(count):
    udp.sendto(b"%d" % i, (host, 9999))
    try:
        udp.recvfrom(2048)
        answered += 1
    except TimeoutError:
        pass
print(answered)
"""


def test_relay_drops_udp_only_and_everything_is_removed(tmp_path: Path) -> None:
    """The lossy link of the loss scenarios: UDP datagrams are dropped at about the rate
    asked, each way; TCP (the signaling) goes through whole."""
    require_browser_environment()
    size, count, loss = 300_000, 200, 0.2
    with network() as net:
        p = net.add_participant(loss=loss, jitter_ms=5, seed=7, max_s=60, workdir=tmp_path)
        server = subprocess.Popen(
            net.hub_command(sys.executable, "-c", ECHO_SERVER, net.hub_address, str(size))
        )
        try:
            client = subprocess.run(
                p.command(
                    sys.executable, "-c", ECHO_CLIENT, net.hub_address, str(size), str(count)
                ),
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            server.kill()
            server.wait()
        net.stop_relays()
        assert client.returncode == 0, client.stderr
        tcp_received, answered = (int(line) for line in client.stdout.split())
        assert p.relay_stats is not None
        counts = json.loads(p.relay_stats.read_text())
        names = [p.netns, net.hub]
    assert tcp_received == size
    # A datagram comes back if neither way dropped it: about (1 - loss)^2 of them.
    assert 0.4 * count < answered < 0.85 * count, answered
    for way in ("up", "down"):
        udp, dropped = counts[way]["udp"], counts[way]["dropped"]
        assert udp >= count * 0.6, counts
        assert 0.1 * udp < dropped < 0.3 * udp, counts
        assert counts[way]["packets"] > udp  # TCP and ARP went through too
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    for name in names:
        assert name not in netns.stdout.split(), netns.stdout

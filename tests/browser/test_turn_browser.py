"""Browsers that cannot reach the SFU's media address get through coturn, with the TURN
credentials the node hands out in call.join: over UDP, and over TCP with the pages set to
relay only (``iceTransportPolicy: "relay"``, the call page's ``relay=1``).

Two namespaces and two links::

    host ── veth ── [M: node (HTTP on every address), SFU media on M.address, coturn on LINK_M]
                     M (LINK_M) ── veth ── (LINK_B) [B: two Chromiums]

B's only route is to the M-B link's /30, so M.address, where the SFU gathers its only ICE
candidate, is out of its reach both ways: the browsers reach the node's signaling and coturn
on LINK_M, and coturn relays to the SFU inside M. (B's own veth to the host is removed: the
browsers would try to reach coturn from it too and wait for that to time out.) coturn is set
up as docs/deploy.md sets it up: the node's TURN secret, private peers denied but the SFU's
address, one listener.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import pytest

from tests.browser.harness import (
    NamespacedNode,
    namespaced_node,
    require_browser_environment,
    run_driver,
)
from tests.browser.netns import NetworkNamespace, network_namespace
from tests.coturn import Coturn, coturn, require_coturn
from tests.helpers import make_token

pytestmark = pytest.mark.browser

DRIVER_TIMEOUT_S: Final = 40.0
SAMPLE_S: Final = 1.0
TURN_PORT: Final = 3478  # the namespace is ours alone: the standard port is free
TURN_SECRET: Final = "turn-secret-of-the-browser-test-0123456789"


@dataclass
class TurnCall:
    node: NamespacedNode
    turn: Coturn
    browsers: NetworkNamespace
    link_m: str  # the node's and coturn's address on the browsers' link
    link_b: str

    @property
    def base_url(self) -> str:
        return f"http://{self.link_m}:{self.node.port}"


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, f"ip {' '.join(args)}: {done.stderr.strip()}"


@contextlib.contextmanager
def _link(m: NetworkNamespace, b: NetworkNamespace) -> Iterator[tuple[str, str]]:
    """A veth pair straight from M to B, on a /30 of 10.214/16 mirroring M's own /30 of
    10.213/16 (unique per run as that one is); B's link to the host goes."""
    tag = m.interface[2:-1]
    m_if, b_if = f"hl{tag}m", f"hl{tag}b"
    m_addr = m.host_address.replace("10.213.", "10.214.", 1)
    b_addr = m.address.replace("10.213.", "10.214.", 1)
    _ip("link", "del", b.host_interface)
    _ip("-n", m.name, "link", "add", m_if, "type", "veth", "peer", "name", b_if, "netns", b.name)
    try:
        _ip("-n", m.name, "addr", "add", f"{m_addr}/30", "dev", m_if)
        _ip("-n", b.name, "addr", "add", f"{b_addr}/30", "dev", b_if)
        _ip("-n", m.name, "link", "set", m_if, "up")
        _ip("-n", b.name, "link", "set", b_if, "up")
        yield m_addr, b_addr
    finally:
        subprocess.run(["ip", "-n", m.name, "link", "del", m_if], capture_output=True, timeout=10)


@contextlib.contextmanager
def turn_call(tmp_path: Path, transport: str) -> Iterator[TurnCall]:
    require_browser_environment()
    require_coturn()
    with (
        network_namespace() as m,
        network_namespace() as b,
        _link(m, b) as (link_m, link_b),
        coturn(
            tmp_path / "coturn",
            listen=link_m,
            port=TURN_PORT,
            secret=TURN_SECRET,
            # The doc denies private networks (10/8 too): the SFU is allowed by address.
            allowed_peers=[m.address],
            prefix=m.command(),
        ) as turn,
        namespaced_node(
            m,
            tmp_path,
            {
                "HUDDLE_TURN_URLS": json.dumps(
                    [f"turn:{link_m}:{TURN_PORT}?transport={transport}"]
                ),
                "HUDDLE_TURN_SECRET": TURN_SECRET,
                "HUDDLE_TURN_TTL_S": "600",
            },
            host="0.0.0.0",
        ) as node,
    ):
        yield TurnCall(node=node, turn=turn, browsers=b, link_m=link_m, link_b=link_b)


def _selected_local(stats: list[dict[str, Any]]) -> dict[str, Any]:
    """The local candidate of the connection's selected candidate pair."""
    by_id = {s["id"]: s for s in stats}
    [transport] = [s for s in stats if s["type"] == "transport"]
    pair = by_id[transport["selectedCandidatePairId"]]
    # Its state may read "in-progress" while a consent check on it is under way.
    assert pair.get("nominated") and pair.get("responsesReceived", 0) > 0, pair
    local: dict[str, Any] = by_id[pair["localCandidateId"]]
    return local


@pytest.mark.parametrize(
    ("transport", "relay_only"),
    [("udp", False), ("tcp", True)],
    ids=["turn-udp", "turn-tcp-relay-only"],
)
def test_two_browsers_decode_each_other_through_coturn(
    tmp_path: Path, transport: str, relay_only: bool
) -> None:
    room = f"turn-{transport}"
    result_path = tmp_path / "driver.json"
    with turn_call(tmp_path, transport) as setup:
        # The SFU's media address is out of the browsers' reach: only the relay gets there.
        unreachable = subprocess.run(
            setup.browsers.command("ip", "route", "get", setup.node.ns.address),
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert unreachable.returncode != 0, unreachable.stdout
        tokens = [
            arg
            for identity in ("alice", "bob")
            for arg in ("--participant-token", make_token(identity, rooms=[room]))
        ]
        result = run_driver(
            setup.browsers,
            result_path,
            DRIVER_TIMEOUT_S + 10,
            "--base-url",
            setup.base_url,
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
            *(["--relay"] if relay_only else []),
        )
        turn_log = setup.turn.log_tail()
        node_log = setup.node.log_tail()
    diagnostics = {k: v for k, v in result.items() if k != "mesh"}
    context = (
        f"driver: {json.dumps(diagnostics, indent=1)[-6000:]}\n"
        f"node log:\n{node_log}\ncoturn log:\n{turn_log}\n(full result: {result_path})"
    )
    assert result["ok"], context

    mesh = result["mesh"]
    assert len({page["participant"] for page in mesh.values()}) == 2, mesh.keys()
    for name, page in mesh.items():
        first, second = page["snapshots"]
        # Each page decodes the other's video and receives its audio, still rising.
        video = [
            (a, b)
            for a in first["stats"]
            for b in second["stats"]
            if a["type"] == b["type"] == "inbound-rtp" and a["id"] == b["id"]
        ]
        frames = {
            b["kind"]: (a.get("framesDecoded", 0), b.get("framesDecoded", 0)) for a, b in video
        }
        packets = {b["kind"]: (a["packetsReceived"], b["packetsReceived"]) for a, b in video}
        assert frames["video"][1] > frames["video"][0] > 0, (name, frames)
        assert packets["audio"][1] > packets["audio"][0], (name, packets)
        # Both of its connections, publishing and receiving, went through coturn.
        for which in ("stats", "publisher_stats"):
            local = _selected_local(second[which])
            assert local["candidateType"] == "relay", (name, which, local, context)
            assert local["address"] == setup.link_m, (name, which, local)
            assert local.get("relayProtocol") == transport, (name, which, local)
        if relay_only:
            sent = result[f"{name}_state"]["sentCandidates"]
            assert sent and all(" typ relay " in line for line in sent), (name, sent)
        shot = Path(page["screenshot"])
        assert shot.is_file() and shot.stat().st_size > 10_000, shot
    # coturn was stopped and its config (it holds the secret) removed.
    assert setup.turn.proc.returncode is not None
    assert not (setup.turn.workdir / "turnserver.conf").exists()

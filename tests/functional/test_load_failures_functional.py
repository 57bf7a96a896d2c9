"""huddle-load against an in-process node when something is wrong: clients that cannot
connect, a wrong secret, the node named twice, counters left by an earlier run. A failed run
says why and exits 1 (a refused option 2) instead of reporting figures as if healthy."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.procs import free_port
from tests.helpers import TEST_KEY, TEST_SECRET, Node

pytestmark = pytest.mark.slow

CHAT_TINY = ["--clients", "20", "--duration", "1", "--rate", "20", "--drivers", "1"]
SIGNALING_TINY = ["--n", "6", "--procs", "2", "--duration", "0.2", "--paced-duration", "0.2"]


async def _load(
    module: str, *args: str, secret: str = TEST_SECRET, timeout: float = 100.0
) -> tuple[int, str, str]:
    """``python -m benchmarks.MODULE ARGS`` beside the node in this event loop: (exit
    status, stdout, stderr)."""
    env = {**os.environ, "HUDDLE_API_KEY": TEST_KEY, "HUDDLE_API_SECRET": secret}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"benchmarks.{module}",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def _dead() -> str:
    return f"http://127.0.0.1:{free_port()}"


async def test_chat_stops_when_some_clients_cannot_connect(node: Node) -> None:
    """Half the clients on a dead port: not 'lost' deliveries and exit 0, but the reason."""
    dead = _dead()
    code, out, err = await _load("chat_load", "--url", f"{node.url},{dead}", *CHAT_TINY)
    assert code == 1, (out, err[-3000:])
    assert "10 of 20 clients could not connect: ClientConnectorError" in err, err[-3000:]
    assert dead.removeprefix("http://") in err
    assert "lost" not in out


async def test_chat_says_a_wrong_secret_is_why_clients_did_not_connect(node: Node) -> None:
    code, out, err = await _load("chat_load", "--url", node.url, *CHAT_TINY, secret="x" * 40)
    assert code == 1, (out, err[-3000:])
    assert "20 of 20 clients could not connect" in err, err[-3000:]
    assert "groups not created" not in err


async def test_the_same_node_under_two_names_is_refused(node: Node) -> None:
    twice = f"{node.url},http://localhost:{node.port}"
    for module, args in [("chat_load", CHAT_TINY), ("signaling_load", SIGNALING_TINY)]:
        code, out, err = await _load(module, "--url", twice, *args)
        assert code == 2, (module, out, err[-3000:])
        assert f"{node.url} and http://localhost:{node.port} are the same node" in err, err


async def test_signaling_exits_1_when_no_client_connects() -> None:
    code, out, err = await _load("signaling_load", "--url", _dead(), *SIGNALING_TINY)
    assert code == 1, (out, err[-3000:])
    assert "FAILED: huddle: no client connected: ClientConnectorError" in out, out


async def test_error_counters_are_the_runs_own(node: Node, tmp_path: Path) -> None:
    """A run refused by a wrong secret leaves the node's invalid_token counter up; the next
    run's figures hold only what it caused itself."""
    # Its exit status is test_signaling_exits_1_when_no_client_connects's concern.
    await _load("signaling_load", "--url", node.url, *SIGNALING_TINY, secret="x" * 40)

    out_json = tmp_path / "signaling.json"
    code, out, err = await _load(
        "signaling_load", "--url", node.url, *SIGNALING_TINY, "--json", str(out_json)
    )
    assert code == 0, err[-3000:]
    # Its own errors it may have (a saturating phase can meet the rate limit), not those.
    assert "invalid_token" not in out
    doc: dict[str, Any] = json.loads(out_json.read_text())
    counters = doc["huddle"]["server_counters"]
    assert not any("invalid_token" in k for k in counters), counters
    assert counters["huddle_ws_authenticated"] == 6

    chat_json = tmp_path / "chat.json"
    code, out, err = await _load(
        "chat_load", "--url", node.url, *CHAT_TINY, "--json", str(chat_json)
    )
    assert code == 0, err[-3000:]
    chat = json.loads(chat_json.read_text())["results"]["deployment"]["server_counters"]
    assert not any("invalid_token" in k for k in chat[node.url]), chat


async def test_sfu_exits_1_and_gives_the_cause_when_a_scenario_fails() -> None:
    dead = _dead()
    args = ["--url", dead, "--scenarios", "1x1", "--duration", "1", "--bot-procs", "1"]
    code, out, err = await _load("sfu_load", *args, timeout=110)
    assert code == 1, (out[-3000:], err[-3000:])
    failed = next(line for line in out.splitlines() if "FAILED" in line)
    assert "bot 0 failed in 'publish':" in failed
    # The cause, not only the first line of the bot's traceback.
    assert f"Cannot connect to host {dead.removeprefix('http://')}" in failed, failed

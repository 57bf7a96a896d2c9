"""Browser test support: a Huddle node and headless Chromium inside a network namespace.

The node runs as ``ip netns exec NS python -m huddle serve`` on the namespace's address; the
browser runs as ``ip netns exec NS python -m tests.browser.driver``, which starts Chromium
through Playwright as its own child, so the browser is in the namespace too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from tests.browser.host_chromium import chromium_missing, fail_if_missing
from tests.browser.netns import NetworkNamespace
from tests.helpers import TEST_KEY, TEST_SECRET

ROOT: Final = Path(__file__).resolve().parents[2]
NODE_PORT: Final = 8080  # the namespace is ours alone: any port is free
NODE_READY_S: Final = 15.0


def require_browser_environment() -> None:
    missing = []
    if os.geteuid() != 0:
        missing.append("root, for the test's network namespace (ip netns)")
    if shutil.which("ip") is None:
        missing.append("the ip command (apt-get install iproute2)")
    fail_if_missing(missing + chromium_missing())


@dataclass
class NamespacedNode:
    """A ``huddle serve`` process inside the test's network namespace."""

    ns: NetworkNamespace
    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.ns.address}:{self.port}"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


def _wait_healthy(node: NamespacedNode) -> None:
    deadline = time.monotonic() + NODE_READY_S
    while True:
        if node.proc.poll() is not None:
            raise RuntimeError(f"node exited ({node.proc.returncode}):\n{node.log_tail()}")
        try:
            with urllib.request.urlopen(f"{node.url}/healthz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"node not healthy within {NODE_READY_S} s:\n{node.log_tail()}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL to the whole process group (the node's Redis, the browser)."""
    if proc.poll() is None:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


@contextlib.contextmanager
def namespaced_node(
    ns: NetworkNamespace,
    workdir: Path,
    settings: dict[str, str] | None = None,
    host: str | None = None,
) -> Iterator[NamespacedNode]:
    """A node on the namespace's address, gathering ICE candidates there only; stopped after.
    ``settings`` are more ``HUDDLE_*`` environment variables (a shorter ring timeout, say);
    ``host`` is where it listens for HTTP when that is not the namespace's address alone
    (``0.0.0.0``: on every address of the namespace).

    Embedded Redis (REDIS_URL unset): it lives on a unix socket in the data folder and dies
    with the node."""
    data_dir = workdir / "node"
    data_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUDDLE_")}
    env.pop("REDIS_URL", None)
    env.update(HUDDLE_API_KEY=TEST_KEY, HUDDLE_API_SECRET=TEST_SECRET, HUDDLE_LOG_FORMAT="text")
    env.update(settings or {})
    log_path = workdir / "node.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ns.command(
                sys.executable,
                "-m",
                "huddle",
                "serve",
                "--host",
                host or ns.address,
                "--port",
                str(NODE_PORT),
                "--ice-addresses",
                ns.address,
                "--data-dir",
                str(data_dir),
            ),
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    node = NamespacedNode(ns=ns, proc=proc, log_path=log_path, port=NODE_PORT)
    try:
        _wait_healthy(node)
        yield node
    finally:
        _stop(proc, timeout=15)


def run_driver(
    ns: NetworkNamespace,
    out: Path,
    timeout_s: float,
    *args: str,
    module: str = "tests.browser.driver",
    inside: bool = True,
) -> dict[str, Any]:
    """Run a browser driver (tests/browser/driver.py unless ``module`` says another) inside
    the namespace (or, ``inside`` false, on the host side of its veth: a driver that caps
    the namespace's link itself) and return its JSON result."""
    log_path = out.with_suffix(".log")
    command = [sys.executable, "-m", module, "--out", str(out), *args]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            ns.command(*command) if inside else command,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        finished = True
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            finished = False
        finally:
            _stop(proc, timeout=5)
    if not out.exists():
        why = f"exit {proc.returncode}" if finished else f"killed after {timeout_s:.0f} s"
        output = log_path.read_text(errors="replace")[-4000:]
        raise AssertionError(f"browser driver wrote no result ({why}):\n{output}")
    result: dict[str, Any] = json.loads(out.read_text())
    return result

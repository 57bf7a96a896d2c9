"""Janus 1.1.2 (Debian's ``janus`` package) as the SFU load benchmark's same-run baseline.

Janus (libnice) gathers no ICE candidates on loopback, so it runs in a network namespace
this module creates, joined to the host by a veth pair; the bots gather on the host end,
Janus on the namespace end (shared/recipes/janus-baseline.md). Everything here is torn down
by ``JanusServer.stop`` and ``Netns.remove``, which the benchmark calls in ``finally``.

``JanusSession`` is the bots' asyncio client of the Janus HTTP API (sessions, VideoRoom
handles, long-polled events).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import ipaddress
import itertools
import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp

from benchmarks.procs import die_with_parent, log_tail

VIDEOROOM: Final = "janus.plugin.videoroom"
START_TIMEOUT_S: Final = 20.0
STOP_TIMEOUT_S: Final = 10.0
REQUEST_TIMEOUT_S: Final = 15.0
POLL_MAX_EVENTS: Final = 10
# The /24 blocks of 10.213.0.0/16 tried for the namespace's veth pair.
_SUBNET_BASE: Final = ipaddress.IPv4Network("10.213.0.0/16")


class JanusError(Exception):
    pass


def janus_binary() -> str | None:
    return shutil.which("janus")


def _library_folder(kind: str) -> Path | None:
    """Where Debian's package keeps Janus's plugins/transports/events/loggers."""
    for candidate in [*sorted(glob.glob(f"/usr/lib/*/janus/{kind}")), f"/usr/lib/janus/{kind}"]:
        if Path(candidate).is_dir():
            return Path(candidate)
    return None


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    if done.returncode != 0:
        raise JanusError(f"{' '.join(cmd)}: {done.stderr.strip() or done.returncode}")


@dataclass
class Netns:
    """A network namespace joined to the host by a veth pair, made for one benchmark run."""

    name: str
    host_if: str
    host_addr: str
    ns_addr: str

    @classmethod
    def create(cls) -> Netns:
        tag = f"{os.getpid() % 100000}{secrets.token_hex(1)}"
        name, host_if, ns_if = f"hsfu{tag}", f"hs{tag}a", f"hs{tag}b"
        subnet = _free_subnet()
        host_addr, ns_addr = str(subnet.network_address + 1), str(subnet.network_address + 2)
        ns = cls(name=name, host_if=host_if, host_addr=host_addr, ns_addr=ns_addr)
        try:
            _run(["ip", "netns", "add", name])
            _run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if])
            _run(["ip", "link", "set", ns_if, "netns", name])
            _run(["ip", "addr", "add", f"{host_addr}/24", "dev", host_if])
            _run(["ip", "link", "set", host_if, "up"])
            _run(["ip", "netns", "exec", name, "ip", "addr", "add", f"{ns_addr}/24", "dev", ns_if])
            _run(["ip", "netns", "exec", name, "ip", "link", "set", ns_if, "up"])
            _run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])
        except BaseException:
            ns.remove()
            raise
        return ns

    def remove(self) -> None:
        # Deleting one end of a veth deletes both; the namespace goes last.
        for cmd in (["ip", "link", "del", self.host_if], ["ip", "netns", "del", self.name]):
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(cmd, capture_output=True, timeout=20, check=False)


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 of 10.213.0.0/16 that no address or route of the host overlaps."""
    taken: list[ipaddress.IPv4Network] = []
    out = subprocess.run(
        ["ip", "-4", "-o", "route", "show", "table", "all"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    ).stdout
    for line in out.splitlines():
        word = line.split()[0] if line.split() else ""
        if word == "local" and len(line.split()) > 1:
            word = line.split()[1]
        with contextlib.suppress(ValueError):
            taken.append(ipaddress.IPv4Network(word, strict=False))
    start = (os.getpid() * 7) % 250
    for i in range(250):
        subnet = list(_SUBNET_BASE.subnets(new_prefix=24))[1 + (start + i) % 250]
        if not any(subnet.overlaps(t) for t in taken if t.prefixlen > 0):
            return subnet
    raise JanusError("no free /24 in 10.213.0.0/16 for the namespace")


def _write_config(folder: Path, ns: Netns, http_port: int) -> Path:
    plugins = _library_folder("plugins")
    transports = _library_folder("transports")
    if plugins is None or transports is None:
        raise JanusError("Janus plugins/transports folders not found (is `janus` installed?)")
    events = _library_folder("events") or folder
    loggers = _library_folder("loggers") or folder

    def others(path: Path, keep: str) -> str:
        names = sorted(p.name for p in path.glob("libjanus_*.so") if p.name != keep)
        return ",".join(names)

    folder.mkdir(parents=True, exist_ok=True)
    main = folder / "janus.jcfg"
    main.write_text(
        f"""general: {{
    configs_folder = "{folder}"
    plugins_folder = "{plugins}"
    transports_folder = "{transports}"
    events_folder = "{events}"
    loggers_folder = "{loggers}"
    debug_level = 3
    session_timeout = 60
}}
certificates: {{
}}
media: {{
    rtp_port_range = "20000-40000"
}}
nat: {{
    nice_debug = false
    ice_enforce_list = "{ns.ns_addr}"
}}
plugins: {{
    disable = "{others(plugins, "libjanus_videoroom.so")}"
}}
transports: {{
    disable = "{others(transports, "libjanus_http.so")}"
}}
loggers: {{
    disable = "{others(loggers, "")}"
}}
events: {{
    broadcast = false
}}
"""
    )
    (folder / "janus.transport.http.jcfg").write_text(
        f"""general: {{
    json = "plain"
    base_path = "/janus"
    http = true
    port = {http_port}
    ip = "{ns.ns_addr}"
    https = false
    acl = "{ns.host_addr}"
}}
admin: {{
    admin_http = false
    admin_https = false
}}
"""
    )
    (folder / "janus.plugin.videoroom.jcfg").write_text("general: {\n}\n")
    return main


@dataclass
class JanusServer:
    ns: Netns
    proc: subprocess.Popen[bytes]
    url: str  # http://ADDR:PORT/janus
    log_path: Path

    @property
    def pid(self) -> int:
        # `ip netns exec` execs Janus itself: this pid is Janus's.
        return self.proc.pid

    @classmethod
    def start(cls, folder: Path, ns: Netns, http_port: int = 8088) -> JanusServer:
        binary = janus_binary()
        if binary is None:
            raise JanusError("`janus` not installed (apt-get install -y janus)")
        config = _write_config(folder, ns, http_port)
        log_path = folder / "janus.log"
        cmd = [
            "ip",
            "netns",
            "exec",
            ns.name,
            binary,
            "-C",
            str(config),
            "-F",
            str(folder),
            "-E",
            ns.ns_addr,
            "-N",
            "-o",
            "-L",
            str(log_path),
        ]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        server = cls(
            ns=ns, proc=proc, url=f"http://{ns.ns_addr}:{http_port}/janus", log_path=log_path
        )
        try:
            server._wait_ready()
        except BaseException:
            server.stop()
            raise
        return server

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise JanusError(f"janus exited at start:\n{self.log_tail()}")
            with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
                info = _get(f"{self.url}/info")
                if info.get("janus") == "server_info":
                    if VIDEOROOM not in info.get("plugins", {}):
                        raise JanusError("janus runs without the VideoRoom plugin")
                    return
            if time.monotonic() > deadline:
                raise JanusError(f"janus not ready in time:\n{self.log_tail()}")
            time.sleep(0.1)

    def version(self) -> str:
        with contextlib.suppress(OSError, urllib.error.URLError, ValueError):
            return str(_get(f"{self.url}/info").get("version_string", ""))
        return ""

    def log_tail(self) -> str:
        return log_tail(self.log_path)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    # --- rooms, from the parent process (blocking) --------------------------------------

    def create_room(self, room: int, publishers: int) -> None:
        self._with_handle(
            {
                "request": "create",
                "room": room,
                "publishers": publishers,
                "audiocodec": "opus",
                "videocodec": "vp8",
                # Forwarding against forwarding: no REMB cap, no periodic key frame requests.
                "bitrate": 0,
                "fir_freq": 0,
                "notify_joining": False,
            }
        )

    def destroy_room(self, room: int) -> None:
        with contextlib.suppress(JanusError, OSError, urllib.error.URLError):
            self._with_handle({"request": "destroy", "room": room})

    def _with_handle(self, body: dict[str, Any]) -> dict[str, Any]:
        session = _post(self.url, {"janus": "create"})["data"]["id"]
        try:
            handle = _post(f"{self.url}/{session}", {"janus": "attach", "plugin": VIDEOROOM})
            reply = _post(
                f"{self.url}/{session}/{handle['data']['id']}", {"janus": "message", "body": body}
            )
            data: dict[str, Any] = reply.get("plugindata", {}).get("data", {})
            if "error" in data:
                raise JanusError(f"{body['request']}: {data['error']}")
            return data
        finally:
            with contextlib.suppress(JanusError, OSError, urllib.error.URLError):
                _post(f"{self.url}/{session}", {"janus": "destroy"})


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def _post(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    payload = {**payload, "transaction": secrets.token_hex(6)}
    request = urllib.request.Request(
        url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    if doc.get("janus") == "error":
        raise JanusError(str(doc.get("error")))
    return doc


# --- the bots' client ----------------------------------------------------------------


class JanusSession:
    """One Janus session over HTTP: handles, plugin messages and their long-polled events."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self._http = http
        self._url = url
        self.id = 0
        self._transactions = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._poller: asyncio.Task[None] | None = None

    async def create(self) -> None:
        reply = await self._post(self._url, {"janus": "create"})
        self.id = int(reply["data"]["id"])
        self._poller = asyncio.create_task(self._poll())

    async def attach(self) -> int:
        reply = await self._post(f"{self._url}/{self.id}", {"janus": "attach", "plugin": VIDEOROOM})
        return int(reply["data"]["id"])

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Send a plugin request and wait for its event (the plugin answers asynchronously)."""
        transaction = f"t{next(self._transactions)}"
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[transaction] = waiter
        payload: dict[str, Any] = {"janus": "message", "body": body, "transaction": transaction}
        if jsep is not None:
            payload["jsep"] = jsep
        try:
            reply = await self._post(f"{self._url}/{self.id}/{handle}", payload)
            if reply.get("janus") == "success":  # a synchronous plugin reply
                event = reply
            else:
                event = await asyncio.wait_for(waiter, REQUEST_TIMEOUT_S)
        finally:
            self._waiting.pop(transaction, None)
        data = event.get("plugindata", {}).get("data", {})
        if "error" in data:
            raise JanusError(f"{body.get('request')}: {data['error']}")
        return event

    async def destroy(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self.id:
            with contextlib.suppress(Exception):
                await self._post(f"{self._url}/{self.id}", {"janus": "destroy"})

    async def _post(self, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        payload.setdefault("transaction", f"t{next(self._transactions)}")
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
        async with self._http.post(url, json=payload, timeout=timeout) as resp:
            doc: dict[str, Any] = await resp.json(content_type=None)
        if doc.get("janus") == "error":
            raise JanusError(str(doc.get("error")))
        return doc

    async def _poll(self) -> None:
        """Long-poll the session's events (which also keeps it alive)."""
        url = f"{self._url}/{self.id}?maxev={POLL_MAX_EVENTS}"
        timeout = aiohttp.ClientTimeout(total=60)
        while True:
            try:
                async with self._http.get(url, timeout=timeout) as resp:
                    doc = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                await asyncio.sleep(0.2)
                continue
            for event in doc if isinstance(doc, list) else [doc]:
                waiter = self._waiting.get(str(event.get("transaction", "")))
                if waiter is not None and not waiter.done() and event.get("janus") == "event":
                    waiter.set_result(event)

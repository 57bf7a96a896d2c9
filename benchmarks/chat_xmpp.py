"""The chat benchmark's peer server: ejabberd (XMPP), started on this machine and driven
over its WebSocket endpoint (RFC 7395) beside Huddle and the bare relay, for one-to-one
messages.

ejabberd here does what a one-to-one message needs and nothing more: anonymous login under
any name (SASL PLAIN with ``anonymous_protocol: login_anon``), and a message to a connected
user's resource is written to that resource; no archive (mod_mam), offline store, roster,
carbons or shaper. So it keeps less than Huddle does (no history, no sequence numbers, no
copy to the sender's devices): the figure a server with nothing durable reaches.

The client speaks the few stanzas a load driver needs: each WebSocket message is one
stanza (RFC 7395), so an incoming message is told by its start and read with regular
expressions, where an XMPP library would parse each stanza into a tree beside the server
being measured on the same machine.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import glob
import os
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from xml.sax.saxutils import escape, unescape

import aiohttp

from benchmarks.procs import log_tail, start_logged

DOMAIN: Final = "localhost"
RESOURCE: Final = "load"
# The Debian package's ejabberd (23.01 on bookworm).
APP_GLOB: Final = "/usr/lib/*/ejabberd-*/ebin/ejabberd.app"
ERL: Final = "erl"
START_TIMEOUT_S: Final = 60.0

_FRAMING: Final = "urn:ietf:params:xml:ns:xmpp-framing"
_OPEN: Final = f'<open xmlns="{_FRAMING}" to="{DOMAIN}" version="1.0"/>'
_BIND: Final = (
    '<iq type="set" id="bind" xmlns="jabber:client">'
    f'<bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>{RESOURCE}</resource></bind></iq>'
)
_FROM: Final = re.compile(r'from=["\']([^"\'@/]+)@')
_ERROR: Final = re.compile(r"^<message[^>]*type=[\"']error")
_BODY: Final = re.compile(r"<body>([^<]*)</body>")
# What XML text may hold beside &lt; &gt; &amp; (ejabberd writes quotes so).
_QUOTES: Final = {"&quot;": '"', "&apos;": "'"}

# ejabberd's configuration: a WebSocket listener on 127.0.0.1 only, anonymous logins. The
# listener's backlog is 5 unless set: the drivers' dozens of connects at once overflowed it
# (dropped SYNs, retried after 1, 3, 7 s...: a few clients past the connect timeout).
CONFIG: Final = """\
hosts:
  - {domain}
loglevel: warning
log_rotate_count: 0
listen:
  - port: {port}
    ip: "127.0.0.1"
    backlog: 1024
    module: ejabberd_http
    request_handlers:
      /ws: ejabberd_http_ws
auth_method: [anonymous]
anonymous_protocol: login_anon
allow_multiple_connections: true
max_fsm_queue: 100000
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
modules: {{}}
"""


class XmppError(Exception):
    pass


@dataclass
class XmppMessage:
    """One chat message received: who sent it and its body."""

    sender: str
    body: str


class XmppClient:
    """One user's connection: logs in as ``user`` (any password), binds a resource, then
    sends and receives chat messages; ``on_message`` is called with each one received."""

    def __init__(
        self,
        url: str,
        user: str,
        session: aiohttp.ClientSession,
        on_message: Callable[[XmppMessage], None],
    ) -> None:
        self.url = url
        self.user = user
        self.http = session
        self.on_message = on_message
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self.close_code: int | None = None
        self.bounced = 0  # messages this user sent that came back undelivered

    @property
    def closed(self) -> bool:
        return self.ws is None or self.ws.closed

    async def _expect(self, ws: aiohttp.ClientWebSocketResponse, *marks: str) -> str:
        """The next stanza, which must hold each of ``marks``."""
        msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise XmppError(f"{self.user}: the server closed the stream ({msg.type.name})")
        text: str = msg.data
        # Attributes in either quotes.
        if not all(m in text.replace("'", '"') for m in marks):
            raise XmppError(f"{self.user}: expected {marks}, got {text[:200]!r}")
        return text

    async def connect(self) -> None:
        ws = await self.http.ws_connect(self.url, protocols=("xmpp",), autoping=True)
        self.ws = ws
        await ws.send_str(_OPEN)
        await self._expect(ws, "<open")
        await self._expect(ws, "PLAIN")
        secret = base64.b64encode(f"\0{self.user}\0load".encode()).decode()
        await ws.send_str(
            f'<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="PLAIN">{secret}</auth>'
        )
        await self._expect(ws, "<success")
        await ws.send_str(_OPEN)
        await self._expect(ws, "<open")
        await self._expect(ws, "bind")
        await ws.send_str(_BIND)
        await self._expect(ws, 'id="bind"', 'type="result"')
        self._reader = asyncio.create_task(self._read(ws))

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            text: str = msg.data
            if not text.startswith("<message"):
                continue
            if _ERROR.search(text):
                # Returned undelivered (no such user online): not a message received.
                self.bounced += 1
                continue
            sender, body = _FROM.search(text), _BODY.search(text)
            if sender is not None and body is not None:
                self.on_message(XmppMessage(sender.group(1), unescape(body.group(1), _QUOTES)))
        self.close_code = ws.close_code

    async def send(self, to: str, body: str) -> None:
        if self.ws is None or self.ws.closed:
            raise ConnectionError(f"{self.user}: not connected")
        await self.ws.send_str(
            f'<message xmlns="jabber:client" to="{to}@{DOMAIN}/{RESOURCE}" type="chat">'
            f"<body>{escape(body)}</body></message>"
        )

    async def close(self) -> None:
        ws = self.ws
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await ws.send_str(f'<close xmlns="{_FRAMING}"/>')
            await ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def ejabberd_libs() -> Path | None:
    """The folder holding ejabberd's Erlang application (Debian: /usr/lib/<arch>/), None
    when ejabberd is not installed."""
    found = sorted(glob.glob(APP_GLOB))
    return Path(found[-1]).parents[2] if found else None


def start_ejabberd(folder: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    """ejabberd in the foreground as this user (the Erlang VM, not ejabberdctl, which runs
    it as the package's user), with its configuration, database and log in ``folder``;
    serves ``ws://127.0.0.1:PORT/ws`` once a client can log in (:func:`wait_ejabberd`)."""
    libs = ejabberd_libs()
    if libs is None:
        raise RuntimeError("ejabberd is not installed (Debian: apt-get install ejabberd)")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "ejabberd.yml"
    config.write_text(CONFIG.format(domain=DOMAIN, port=port))
    env = {
        **os.environ,
        "ERL_LIBS": str(libs),
        "EJABBERD_CONFIG_PATH": str(config),
        "EJABBERD_LOG_PATH": str(folder / "ejabberd.log"),
        "ERL_CRASH_DUMP": str(folder / "erl_crash.dump"),
    }
    # No node name: a VM of its own, no distribution (no epmd left behind).
    cmd = [ERL, "-noinput", "+K", "true", "-mnesia", "dir", f'"{folder / "db"}"', "-s", "ejabberd"]
    return start_logged(cmd, env, log)


def wait_ejabberd(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until a user can log in at ``url``; fails with the log's end if ejabberd exited."""

    async def probe() -> bool:
        async with aiohttp.ClientSession() as http:
            client = XmppClient(url, "probe", http, lambda m: None)
            try:
                await client.connect()
            except (OSError, aiohttp.ClientError, XmppError):
                return False
            finally:
                await client.close()
            return True

    deadline = time.monotonic() + START_TIMEOUT_S
    while not asyncio.run(probe()):
        if proc.poll() is not None:
            raise RuntimeError(f"ejabberd exited at start:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"ejabberd not serving in time:\n{log_tail(log)}")
        time.sleep(0.2)

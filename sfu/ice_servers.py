"""ICE servers handed to clients, with TURN REST API credentials. Pure."""

from __future__ import annotations

import base64
import hashlib
import hmac

from sfu.types import IceServer


def turn_credentials(secret: str, identity: str, now: int, ttl_s: int) -> tuple[str, str]:
    """Time-limited TURN credentials (the TURN REST API convention, as coturn's
    ``use-auth-secret``): username ``EXPIRY:IDENTITY``, password base64(HMAC-SHA1)."""
    username = f"{now + ttl_s}:{identity}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(
    *,
    stun_urls: list[str],
    turn_urls: list[str],
    turn_secret: str | None,
    identity: str,
    now: int,
    ttl_s: int,
) -> list[IceServer]:
    servers: list[IceServer] = []
    if stun_urls:
        servers.append(IceServer(urls=list(stun_urls)))
    if turn_urls and turn_secret:
        username, credential = turn_credentials(turn_secret, identity, now, ttl_s)
        servers.append(IceServer(urls=list(turn_urls), username=username, credential=credential))
    return servers

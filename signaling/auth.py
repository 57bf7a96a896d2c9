"""Access tokens: HS256 JWTs minted with the API secret, checked at ``hello``.

Claims: ``iss`` (API key), ``sub`` (identity), ``name``, ``iat``, ``exp`` and ``grants``.
Pure module: no I/O.
"""

from __future__ import annotations

import re
import time
import unicodedata
from typing import Any, Final

import jwt
import msgspec

ALGORITHM: Final = "HS256"
# Clock skew tolerated between the integrator's token minting host and this node.
LEEWAY_S: Final = 5
_IDENTITY_RE: Final = re.compile(r"^[A-Za-z0-9._@:+-]{1,128}$")


class Grants(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What a token allows. ``rooms`` lists call rooms the holder may join (``*`` = any)."""

    rooms: list[str] = msgspec.field(default_factory=lambda: ["*"])
    can_publish: bool = True
    can_subscribe: bool = True
    admin: bool = False

    def may_join(self, room: str) -> bool:
        return "*" in self.rooms or room in self.rooms


class Claims(msgspec.Struct, kw_only=True):
    identity: str
    name: str
    api_key: str
    issued_at: int
    expires_at: int
    grants: Grants


class AuthError(Exception):
    """A refused token. ``code`` is a protocol error code; the message leaks no secret."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def mint_token(
    *,
    api_key: str,
    api_secret: str,
    identity: str,
    name: str | None = None,
    ttl_s: int = 6 * 3600,
    grants: Grants | None = None,
    now: float | None = None,
) -> str:
    if not _IDENTITY_RE.fullmatch(identity):
        raise ValueError(f"identity must match {_IDENTITY_RE.pattern}")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    issued = int(time.time() if now is None else now)
    payload: dict[str, Any] = {
        "iss": api_key,
        "sub": identity,
        "name": name or identity,
        "iat": issued,
        "exp": issued + ttl_s,
        "grants": msgspec.to_builtins(grants or Grants()),
    }
    return jwt.encode(payload, api_secret, algorithm=ALGORITHM)


def verify_token(token: str, *, keys: dict[str, str], now: float | None = None) -> Claims:
    """Check signature, expiry and shape; ``keys`` maps API key -> secret."""
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except (jwt.PyJWTError, ValueError):
        # ValueError: text that is no UTF-8 (an HTTP header's undecodable bytes), which
        # PyJWT encodes before it looks at anything.
        raise AuthError("invalid_token", "token is not a well-formed JWT") from None
    if header.get("alg") != ALGORITHM:
        raise AuthError("invalid_token", f"token must be signed with {ALGORITHM}")
    api_key = unverified.get("iss")
    secret = keys.get(api_key) if isinstance(api_key, str) else None
    if secret is None or not isinstance(api_key, str):
        raise AuthError("invalid_token", "token issuer is not a known API key")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            issuer=api_key,
            leeway=LEEWAY_S,
            options={"require": ["exp", "sub", "iss"], "verify_iat": False},
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token_expired", "token has expired") from None
    except jwt.InvalidSignatureError:
        raise AuthError("invalid_token", "token signature does not match") from None
    except jwt.PyJWTError as exc:
        raise AuthError("invalid_token", f"token refused: {exc}") from None
    for field in ("exp", "nbf"):
        # PyJWT takes a number in a string too ("1796000000"), which no arithmetic here does.
        value = claims.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise AuthError("invalid_token", f"token `{field}` must be a number")
    if now is not None and claims["exp"] + LEEWAY_S < now:
        raise AuthError("token_expired", "token has expired")
    identity = claims["sub"]
    if not isinstance(identity, str) or not _IDENTITY_RE.fullmatch(identity):
        raise AuthError("invalid_token", "token subject is not a valid identity")
    try:
        grants = msgspec.convert(claims.get("grants") or {}, Grants)
    except msgspec.ValidationError as exc:
        raise AuthError("invalid_token", f"token grants malformed: {exc}") from None
    issued = claims.get("iat", 0)
    if isinstance(issued, bool) or not isinstance(issued, int | float):
        raise AuthError("invalid_token", "token `iat` must be a number")
    name = claims.get("name")
    return Claims(
        identity=identity,
        name=name if isinstance(name, str) and name else identity,
        api_key=api_key,
        issued_at=int(issued),
        expires_at=int(claims["exp"]),
        grants=grants,
    )


def slug_identity(name: str) -> str:
    """A dev-login identity from a typed display name: ``"Ada Lovelace"`` -> ``ada-lovelace``,
    ``"Émile"`` -> ``emile`` (accents dropped, compatibility forms such as fullwidth letters
    folded); a letter or digit with no ASCII form by its code point, ``"张三"`` ->
    ``u5f20-u4e09``, so that a name in any script signs in, and two such names apart.
    huddle/web/app/identity.js ``slugIdentity`` is its twin (the app turns names typed in
    New chat into identities the same way), held to the same answers by
    tests/unit/test_identity_js.py: change both together."""
    out = []
    for ch in unicodedata.normalize("NFKD", name.strip().lower()):
        kind = unicodedata.category(ch)[0]
        if ch.isascii() or kind not in "LNM":
            out.append(ch)  # what is not an identity's character becomes a dash below
        elif kind != "M":  # a mark (an accent) goes
            out.append(f" u{ord(ch):x} ")  # the spaces become dashes
    slug = re.sub(r"[^a-z0-9._@:+-]+", "-", "".join(out)).strip("-")
    return slug[:128]

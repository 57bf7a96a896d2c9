"""Bearer tokens already verified, so that a client fetching many files pays for one check.

A verified token stays valid until its ``exp``: its signature, issuer and claims are fixed
by its text, and a ``nbf`` it has passed stays passed. So a token is looked up by its exact
text and served from here until ``exp`` (plus the leeway ``verify_token`` grants); refused
tokens are never kept. Pure module: no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from signaling.auth import LEEWAY_S, Claims, verify_token

# ~1 KiB each (token text and claims): at most ~1 MiB per node.
CAPACITY: Final = 1024


class TokenCache:
    """``verify_token`` with a bounded memory of the tokens it accepted (oldest out first).

    ``keys`` (API key -> secret) must not change while the cache is in use.
    """

    def __init__(
        self,
        keys: dict[str, str],
        *,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keys = keys
        self.capacity = capacity
        self.clock = clock
        self._verified: dict[str, Claims] = {}

    def verify(self, token: str) -> Claims:
        """The token's claims, or ``AuthError`` exactly as ``verify_token`` raises it."""
        now = self.clock()
        claims = self._verified.get(token)
        if claims is not None:
            if now < claims.expires_at + LEEWAY_S:
                return claims
            del self._verified[token]
        claims = verify_token(token, keys=self.keys, now=now)
        if len(self._verified) >= self.capacity:
            del self._verified[next(iter(self._verified))]
        self._verified[token] = claims
        return claims

    def __len__(self) -> int:
        return len(self._verified)

"""SDP rewriting the SFU needs. Pure."""

from __future__ import annotations

import re
from typing import Final

_CANDIDATE: Final = re.compile(r"^(a=candidate:\S+ \d+ \S+ \d+ )(\S+)( \d+ typ .*)$", re.M)


def announce(sdp: str, addresses: dict[str, str]) -> str:
    """Replace local candidate addresses by the addresses the world reaches them at (1:1
    NAT, a cloud VM's public address): ``addresses`` maps local -> announced."""
    if not addresses:
        return sdp

    def swap(match: re.Match[str]) -> str:
        host = match.group(2)
        return match.group(1) + addresses.get(host, host) + match.group(3)

    return _CANDIDATE.sub(swap, sdp)

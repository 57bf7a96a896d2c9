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


_PT_LINE: Final = re.compile(r"^a=(rtpmap|fmtp|rtcp-fb):(\d+)[ /]", re.I)


def keep_codecs(sdp: str, wanted: dict[str, str]) -> str:
    """Strip every codec but ``wanted[kind]`` (and the RTX that repairs it) from each media
    section of an offer, so that the answer cannot settle on another codec whatever order
    the offerer preferred. Sections without the wanted codec are left as they are (the
    caller refuses those)."""
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(newline)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("m="):
            out.append(line)
            i += 1
            continue
        end = i + 1
        while end < len(lines) and not lines[end].startswith("m="):
            end += 1
        out.extend(_keep_in_section(lines[i:end], wanted))
        i = end
    return newline.join(out)


def _keep_in_section(section: list[str], wanted: dict[str, str]) -> list[str]:
    m_line = section[0].split(" ")
    kind = m_line[0][2:]
    codec = wanted.get(kind)
    if codec is None or len(m_line) < 4:
        return section
    names: dict[str, str] = {}
    apt: dict[str, str] = {}
    for line in section[1:]:
        if line.startswith("a=rtpmap:"):
            pt, _, rest = line[len("a=rtpmap:") :].partition(" ")
            names[pt] = rest.split("/", 1)[0].lower()
        elif line.startswith("a=fmtp:"):
            pt, _, params = line[len("a=fmtp:") :].partition(" ")
            for param in params.split(";"):
                key, _, value = param.strip().partition("=")
                if key == "apt":
                    apt[pt] = value
    main = [pt for pt in m_line[3:] if names.get(pt) == codec.lower()]
    if not main:
        return section
    repair = [pt for pt in m_line[3:] if names.get(pt) == "rtx" and apt.get(pt) in main]
    keep = set(main) | set(repair)
    result = [" ".join(m_line[:3] + main + repair)]
    for line in section[1:]:
        match = _PT_LINE.match(line)
        if match and match.group(2) not in keep:
            continue
        result.append(line)
    return result


# The id the SFU offers the transport-wide sequence number under (aiortc's own extensions
# take 1 to 3).
TRANSPORT_CC_ID: Final = 5


def offer_transport_cc(sdp: str, uri: str, feedback: str) -> str:
    """Add transport-wide congestion control to each audio and video section of an offer the
    SFU makes: the header extension (``uri`` as ``TRANSPORT_CC_ID``) and ``feedback`` on
    every codec but RTX. aiortc offers neither; a browser that answers with both sends
    transport feedback for the SFU's own estimate instead of REMB (sfu.bwe)."""
    newline = "\r\n" if "\r\n" in sdp else "\n"
    out: list[str] = []
    for line in sdp.split(newline):
        out.append(line)
        if line.startswith(("m=audio ", "m=video ")):
            out.append(f"a=extmap:{TRANSPORT_CC_ID} {uri}")
        elif line.startswith("a=rtpmap:"):
            pt, _, rest = line[len("a=rtpmap:") :].partition(" ")
            if rest.split("/", 1)[0].lower() != "rtx":
                out.append(f"a=rtcp-fb:{pt} {feedback}")
    return newline.join(out)


def answered_transport_cc(sdp: str, uri: str, feedback: str) -> dict[str, int]:
    """The sections (by mid) of an answer that accepted transport-wide congestion control:
    the header extension's id in each, where a codec of the section also kept
    ``feedback``."""
    newline = "\r\n" if "\r\n" in sdp else "\n"
    accepted: dict[str, int] = {}
    mid: str | None = None
    ext_id: int | None = None
    has_feedback = False

    def close() -> None:
        if mid is not None and ext_id is not None and has_feedback:
            accepted[mid] = ext_id

    for line in sdp.split(newline):
        if line.startswith("m="):
            close()
            mid, ext_id, has_feedback = None, None, False
        elif line.startswith("a=mid:"):
            mid = line[len("a=mid:") :].strip()
        elif line.startswith("a=extmap:"):
            ident, _, rest = line[len("a=extmap:") :].partition(" ")
            number = ident.split("/", 1)[0]
            # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
            if rest.split(" ", 1)[0] == uri and number.isascii() and number.isdigit():
                ext_id = int(number)
        elif line.startswith("a=rtcp-fb:") and line.split(" ", 1)[-1].strip() == feedback:
            has_feedback = True
    close()
    return accepted

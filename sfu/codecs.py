"""Codec facts the forwarding path needs, read from RTP payloads without decoding. Pure."""

from __future__ import annotations


def vp8_keyframe_start(payload: bytes) -> bool:
    """True if this VP8 RTP payload (RFC 7741) begins a key frame."""
    if len(payload) < 1:
        return False
    first = payload[0]
    # S bit set and partition index 0: the first packet of a frame.
    if not first & 0x10 or first & 0x07:
        return False
    at = 1
    if first & 0x80:  # X: extension byte follows
        if len(payload) < 2:
            return False
        ext = payload[1]
        at = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            if len(payload) <= at:
                return False
            at += 2 if payload[at] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            at += 1
        if ext & 0x30:  # T or K: TID/KEYIDX byte
            at += 1
    if len(payload) <= at:
        return False
    # VP8 payload header: P bit (bit 0) is 0 for key frames.
    return not payload[at] & 0x01

"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-
extensions-01), the receive side: what a publisher's bandwidth estimator needs from the SFU.

A publisher that negotiated the transport-wide sequence number header extension numbers
every packet of its transport (audio, video, retransmissions and probes) in one sequence.
The SFU records when each arrived (``ArrivalLog.record``: one dict store per packet) and,
on a timer, reports the arrivals since the last report (``ArrivalLog.feedback``) as RTCP
transport-feedback packets (RTPFB, FMT 15). The publisher's send-side estimator (Chromium's
GCC) reads the delay trend and the losses from them, lowers its send rate when its uplink
queues up, and shares what is left among its streams: audio first.

Pure: no I/O, the clock passed in.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

EXTENSION_URI: Final = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
FEEDBACK_TYPE: Final = "transport-cc"  # the SDP rtcp-fb value
RTPFB: Final = 205
FMT_TRANSPORT_CC: Final = 15

TICK_US: Final = 250  # the unit of receive deltas
REFERENCE_TICK_US: Final = 64_000  # the unit of the reference time
# Status symbols (two bits each).
NOT_RECEIVED: Final = 0
SMALL_DELTA: Final = 1  # received, delta 0..255 ticks: one byte
LARGE_DELTA: Final = 2  # received, delta negative or above 255 ticks: two bytes, signed
MAX_RUN: Final = 0x1FFF  # a run-length chunk's 13-bit length
# One feedback packet covers at most this many sequence numbers, so that it stays well
# under an MTU (a status is at most 2 bits of chunk plus 2 bytes of delta).
MAX_STATUSES: Final = 400
# Arrivals further apart than a signed 16-bit delta (about 8 s) cannot share a packet.
_MAX_DELTA_TICKS: Final = 0x7FFF
_MIN_DELTA_TICKS: Final = -0x8000
# Numbers missing before a feedback's first arrival are reported lost when at most this
# many; a longer gap is not loss to report but a jump in the numbering.
MAX_GAP: Final = 0x4000
_HEADER: Final = struct.Struct("!BBHIIHHI")


def encode_chunks(symbols: list[int]) -> bytes:
    """Packet status chunks for ``symbols``: a run-length chunk for a long run of one symbol
    (or the last symbols, all alike), else a one-bit vector of 14 when they are all
    received-small or not-received, else a two-bit vector of 7. A vector short of symbols at
    the end is filled with not-received (the status count tells the reader where to stop)."""
    out = bytearray()
    i, n = 0, len(symbols)
    while i < n:
        symbol = symbols[i]
        run = 1
        while i + run < n and run < MAX_RUN and symbols[i + run] == symbol:
            run += 1
        if run >= 14 or i + run == n:
            out += struct.pack("!H", (symbol << 13) | run)
            i += run
            continue
        some = symbols[i : i + 14]
        if all(s <= SMALL_DELTA for s in some):
            word = 0x8000
            for k, s in enumerate(some):
                word |= s << (13 - k)
            out += struct.pack("!H", word)
            i += len(some)
        else:
            some = symbols[i : i + 7]
            word = 0xC000
            for k, s in enumerate(some):
                word |= s << (12 - 2 * k)
            out += struct.pack("!H", word)
            i += len(some)
    return bytes(out)


def encode_feedback(
    sender_ssrc: int,
    media_ssrc: int,
    base_seq: int,
    arrivals: list[int | None],
    feedback_count: int,
) -> bytes:
    """One RTCP transport-feedback packet: ``arrivals[k]`` is when the packet numbered
    ``base_seq + k`` arrived (microseconds on any clock that never goes back; None: not
    received). At least one must have arrived; the reference time is the first arrival's,
    rounded down to its 64 ms unit."""
    first = next((a for a in arrivals if a is not None), None)
    if first is None:
        raise ValueError("a feedback packet reports at least one received packet")
    if len(arrivals) > 0xFFFF:
        raise ValueError("too many statuses for one feedback packet")
    reference = first // REFERENCE_TICK_US
    # Deltas between arrivals rounded to ticks, so that rounding errors never add up.
    previous = _ticks(reference * REFERENCE_TICK_US)
    symbols: list[int] = []
    symbol = symbols.append
    deltas = bytearray()
    delta = deltas.append
    for arrival in arrivals:
        if arrival is None:
            symbol(NOT_RECEIVED)
            continue
        now = (arrival + TICK_US // 2) // TICK_US
        ticks = now - previous
        previous = now
        if 0 <= ticks <= 0xFF:
            symbol(SMALL_DELTA)
            delta(ticks)
        elif _MIN_DELTA_TICKS <= ticks <= _MAX_DELTA_TICKS:
            symbol(LARGE_DELTA)
            deltas += struct.pack("!h", ticks)
        else:
            raise ValueError("receive delta out of range for one feedback packet")
    body = encode_chunks(symbols) + bytes(deltas)
    padding = -(len(body)) % 4
    if padding:  # RFC 3550 padding: zeros, then the count in the last byte
        body += bytes(padding - 1) + bytes([padding])
    words = (_HEADER.size + len(body)) // 4 - 1
    header = _HEADER.pack(
        0x80 | (0x20 if padding else 0) | FMT_TRANSPORT_CC,
        RTPFB,
        words,
        sender_ssrc,
        media_ssrc,
        base_seq & 0xFFFF,
        len(arrivals),
        ((reference & 0xFFFFFF) << 8) | (feedback_count & 0xFF),
    )
    return header + body


def _ticks(us: int) -> int:
    return (us + TICK_US // 2) // TICK_US


class ArrivalLog:
    """The arrivals of one transport's packets since its last feedback, by transport-wide
    sequence number. A packet that arrives after a feedback already reported its number lost
    stays reported lost (its sender has decided on it by then); a duplicate keeps its first
    arrival. Numbers are kept as they come (16 bits) and unwrapped once per feedback: the
    per-packet work is one dict store."""

    def __init__(self, sender_ssrc: int) -> None:
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = 0
        self._arrivals: dict[int, int] = {}
        self._next: int | None = None  # the first number the next feedback reports, unwrapped
        self._count = 0

    def record(self, seq: int, now_us: int) -> None:
        """Packet ``seq`` (the 16-bit header extension value) arrived at ``now_us``."""
        self._arrivals.setdefault(seq, now_us)

    def feedback(self) -> list[bytes]:
        """The feedback packets for everything recorded since the last call (none when
        nothing arrived): from the lowest number not yet reported to the newest arrival,
        split where one packet would be too long or its deltas out of range."""
        if not self._arrivals:
            return []
        raw, self._arrivals = self._arrivals, {}
        base = self._next
        if base is None:  # the first feedback starts at the oldest number, wrap or not
            anchor = next(iter(raw))
            base = anchor + min(((k - anchor + 0x8000) & 0xFFFF) - 0x8000 for k in raw)
        arrivals: dict[int, int] = {}
        for k, at in raw.items():
            ahead = (k - base) & 0xFFFF
            if ahead < 0x8000:  # else already reported (lost): stays so
                arrivals[base + ahead] = at
        if not arrivals:
            return []
        start = min(arrivals)
        if start - base <= MAX_GAP:
            start = base  # what was lost before the first arrival is reported too
        end = max(arrivals)
        self._next = end + 1
        span = end - start + 1
        if span <= MAX_STATUSES:
            times = arrivals.values()
            if _ticks(max(times)) - _ticks(min(times)) <= _MAX_DELTA_TICKS:
                # The usual case: one packet, no delta out of range.
                get = arrivals.get
                statuses = [get(k) for k in range(start, end + 1)]
                self._count += 1
                return [
                    encode_feedback(
                        self.sender_ssrc, self.media_ssrc, start, statuses, self._count - 1
                    )
                ]
        packets: list[bytes] = []
        seq = start
        while seq <= end:
            chunk: list[int | None] = []
            previous: int | None = None
            last_received = 0
            k = seq
            while k <= end and len(chunk) < MAX_STATUSES:
                arrival = arrivals.get(k)
                if arrival is not None:
                    if previous is not None and not (
                        _MIN_DELTA_TICKS <= _ticks(arrival) - _ticks(previous) <= _MAX_DELTA_TICKS
                    ):
                        break
                    previous = arrival
                    last_received = len(chunk)
                chunk.append(arrival)
                k += 1
            if previous is None:  # a long stretch of losses only: no packet of its own
                seq += len(chunk)
                continue
            del chunk[last_received + 1 :]  # never end on lost ones: the next starts there
            packets.append(
                encode_feedback(self.sender_ssrc, self.media_ssrc, seq, chunk, self._count)
            )
            self._count += 1
            seq += len(chunk)
        return packets


class Feedback(NamedTuple):
    """One transport-feedback packet as its reader sees it: ``arrivals[k]`` is when the
    packet numbered ``base_seq + k`` (16 bits, wrapping) arrived, in microseconds on the
    receiver's clock (from its 24-bit reference time, which wraps every 12 days), or None."""

    sender_ssrc: int
    media_ssrc: int
    base_seq: int
    feedback_count: int
    arrivals: list[int | None]


def decode_feedback(packet: bytes) -> Feedback:
    """Read one RTCP transport-feedback packet (header included). ValueError for anything
    that is not one or does not hold together: the statuses run past the packet, or the
    deltas into its padding."""
    if len(packet) < _HEADER.size:
        raise ValueError("transport feedback too short")
    first, pt, words, sender, media, base, count, ref_and_count = _HEADER.unpack_from(packet)
    if first & 0xC0 != 0x80 or first & 0x1F != FMT_TRANSPORT_CC or pt != RTPFB:
        raise ValueError("not a transport feedback packet")
    if (words + 1) * 4 != len(packet):
        raise ValueError("transport feedback length does not match its header")
    end = len(packet) - (packet[-1] if first & 0x20 else 0)
    symbols: list[int] = []
    at = _HEADER.size
    while len(symbols) < count:
        if at + 2 > end:
            raise ValueError("transport feedback statuses run past the packet")
        (word,) = struct.unpack_from("!H", packet, at)
        at += 2
        if not word & 0x8000:
            symbols += [(word >> 13) & 3] * (word & MAX_RUN)
        elif not word & 0x4000:
            symbols += [(word >> (13 - k)) & 1 for k in range(14)]
        else:
            symbols += [(word >> (12 - 2 * k)) & 3 for k in range(7)]
    del symbols[count:]
    time_us = (ref_and_count >> 8) * REFERENCE_TICK_US
    arrivals: list[int | None] = []
    for symbol in symbols:
        if symbol == NOT_RECEIVED:
            arrivals.append(None)
            continue
        if symbol == SMALL_DELTA:
            if at + 1 > end:
                raise ValueError("transport feedback deltas run past the packet")
            delta = packet[at]
            at += 1
        elif symbol == LARGE_DELTA:
            if at + 2 > end:
                raise ValueError("transport feedback deltas run past the packet")
            (delta,) = struct.unpack_from("!h", packet, at)
            at += 2
        else:
            raise ValueError("transport feedback status symbol 3 is reserved")
        time_us += delta * TICK_US
        arrivals.append(time_us)
    return Feedback(sender, media, base, ref_and_count & 0xFF, arrivals)

"""Transport-wide congestion control feedback: packets checked byte for byte against ones
worked out by hand from draft-holmer-rmcat-transport-wide-cc-extensions-01 section 3.1, and
the arrival log read back through a decoder written from the same text."""

from __future__ import annotations

import pytest

from sfu.twcc import MAX_STATUSES, ArrivalLog, decode_feedback, encode_chunks, encode_feedback


def decode(packet: bytes) -> tuple[int, int, list[int | None]]:
    """(base sequence number, feedback count, arrival per status in µs or None)."""
    feedback = decode_feedback(packet)
    return feedback.base_seq, feedback.feedback_count, feedback.arrivals


def test_small_deltas_and_a_loss_in_a_one_bit_vector() -> None:
    # Reference time 1 (64 ms); deltas 4 and 2 ticks of 250 µs; statuses 1 0 1.
    packet = encode_feedback(1, 2, 100, [65_000, None, 65_500], 0)
    assert packet == bytes.fromhex("8fcd000500000001000000020064000300000100a8000402")


def test_a_large_delta_takes_a_two_bit_vector_and_the_packet_is_padded() -> None:
    # Deltas 0 and 400 ticks (two bytes); statuses 1 2; five bytes of chunk and deltas
    # padded to eight, the padding bit set and the last byte counting the padding.
    packet = encode_feedback(1, 2, 0xFFFF, [0, 100_000], 7)
    assert packet == bytes.fromhex("afcd00060000000100000002ffff000200000007d800000190000003")


def test_a_packet_that_arrived_earlier_than_the_one_before_has_a_negative_delta() -> None:
    packet = encode_feedback(1, 2, 5, [1_000, 500], 0)
    assert decode(packet)[2] == [1_000, 500]
    assert packet[22:25] == bytes.fromhex("04fffe")  # 4, then -2 ticks as a signed short


def test_chunk_kinds() -> None:
    assert encode_chunks([1] * 20) == bytes.fromhex("2014")  # run of 20 received-small
    assert encode_chunks([0] * 14 + [1]) == bytes.fromhex("000e2001")  # run, then a run of 1
    assert encode_chunks([1, 0] * 7) == bytes.fromhex("aaaa")  # one-bit vector of 14
    assert encode_chunks([1, 2, 0, 1]) == bytes.fromhex("d840")  # two-bit vector of 4


def test_a_feedback_without_any_arrival_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_feedback(1, 2, 0, [None, None], 0)
    with pytest.raises(ValueError):
        encode_feedback(1, 2, 0, [0, 10_000_000], 0)  # a delta beyond a signed short


def test_the_log_reports_arrivals_losses_and_reordering_once() -> None:
    log = ArrivalLog(sender_ssrc=9)
    for seq, at in [(10, 1_000_000), (11, 1_001_000), (13, 1_003_000), (12, 1_004_000)]:
        log.record(seq, at)
    log.record(11, 1_009_000)  # a duplicate keeps its first arrival
    (packet,) = log.feedback()
    base, count, arrivals = decode(packet)
    assert (base, count) == (10, 0)
    assert arrivals == [1_000_000, 1_001_000, 1_004_000, 1_003_000]
    assert log.feedback() == []
    log.record(12, 1_010_000)  # already reported: not again
    log.record(16, 1_020_000)
    (packet,) = log.feedback()
    base, count, arrivals = decode(packet)
    assert (base, count) == (14, 1)
    assert arrivals == [None, None, 1_020_000]  # 14 and 15 lost


def test_the_log_follows_the_sequence_number_across_its_wrap() -> None:
    log = ArrivalLog(sender_ssrc=9)
    log.record(0xFFFE, 5_000_000)
    log.feedback()
    log.record(1, 5_003_000)
    log.record(0xFFFF, 5_001_000)
    (packet,) = log.feedback()
    base, _, arrivals = decode(packet)
    assert base == 0xFFFF
    assert arrivals == [5_001_000, None, 5_003_000]


def test_the_first_feedback_starts_at_the_oldest_number_across_the_wrap() -> None:
    log = ArrivalLog(sender_ssrc=9)
    log.record(1, 7_002_000)
    log.record(0xFFFF, 7_000_000)
    (packet,) = log.feedback()
    base, _, arrivals = decode(packet)
    assert base == 0xFFFF
    assert arrivals == [7_000_000, None, 7_002_000]


def test_long_feedback_is_split_and_every_number_reported_once() -> None:
    log = ArrivalLog(sender_ssrc=9)
    total = MAX_STATUSES * 2 + 50
    for seq in range(total):
        if seq % 10 != 3:
            log.record(seq, 2_000_000 + seq * 1_000)
    log.record(total, 2_000_000 + total * 1_000 + 20_000_000)  # 20 s later: its own packet
    packets = log.feedback()
    assert len(packets) == 4
    seen: dict[int, int | None] = {}
    for packet in packets:
        base, _, arrivals = decode(packet)
        assert len(packet) < 1200
        for k, arrival in enumerate(arrivals):
            assert base + k not in seen
            seen[base + k] = arrival
    assert sorted(seen) == list(range(total + 1))
    for seq, arrival in seen.items():
        if seq == total:
            assert arrival == 2_000_000 + total * 1_000 + 20_000_000
        elif seq % 10 == 3:
            assert arrival is None
        else:
            assert arrival == 2_000_000 + seq * 1_000

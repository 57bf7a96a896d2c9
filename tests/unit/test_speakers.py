from __future__ import annotations

from sfu.speakers import HOLD_S, SpeakerDetector


def feed(d: SpeakerDetector, key: str, level: int, start: float, seconds: float) -> float:
    t = start
    while t < start + seconds:
        d.observe(key, level, t)
        t += 0.02
    return t


def test_loud_track_becomes_speaker_and_quiet_one_does_not() -> None:
    d = SpeakerDetector()
    for t in range(50):
        d.observe("a", 20, t * 0.02)  # -20 dBov: talking
        d.observe("b", 90, t * 0.02)  # -90 dBov: background
    assert d.ranking(1.0) == ["a"]
    assert d.loudest(1.0, 2) == ["a", "b"]


def test_ranking_is_loudest_first() -> None:
    d = SpeakerDetector()
    for t in range(50):
        d.observe("soft", 45, t * 0.02)
        d.observe("loud", 10, t * 0.02)
    assert d.ranking(1.0) == ["loud", "soft"]


def test_short_pause_keeps_speaker_long_silence_drops_it() -> None:
    d = SpeakerDetector()
    t = feed(d, "a", 20, 0.0, 1.0)
    t = feed(d, "a", 127, t, HOLD_S / 2)
    assert d.ranking(t) == ["a"]
    t = feed(d, "a", 127, t, HOLD_S * 3)
    assert d.ranking(t) == []


def test_track_without_packets_goes_stale() -> None:
    d = SpeakerDetector()
    t = feed(d, "a", 20, 0.0, 1.0)
    assert d.ranking(t) == ["a"]
    assert d.ranking(t + 5) == []
    assert d.loudness("a", t + 5) == 0.0


def test_changes_published_at_most_four_times_a_second() -> None:
    d = SpeakerDetector(max_rate_hz=4)
    t = feed(d, "a", 20, 0.0, 1.0)
    assert d.changed(t) == ["a"]
    assert d.changed(t + 0.01) is None  # unchanged
    t2 = feed(d, "b", 5, t, 0.5)
    first = d.changed(t2)
    assert first is not None and first[0] == "b"
    feed(d, "c", 1, t2, 0.5)
    assert d.changed(t2 + 0.1) is None  # changed, but too soon
    assert d.changed(t2 + 0.3) is not None


def test_forget_removes_track() -> None:
    d = SpeakerDetector()
    feed(d, "a", 20, 0.0, 1.0)
    d.forget("a")
    assert d.ranking(1.0) == []

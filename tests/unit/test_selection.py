"""sfu.selection: which streams a subscriber gets in a large room, and a layer's bitrate."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from sfu.selection import (
    SMOOTHING,
    Selection,
    is_selective,
    last_speakers,
    layer_bitrate,
    layers_to_pause,
    select,
    speaking_order,
)


def pick(
    subscriber: str,
    *,
    loudest: Sequence[str] = (),
    order: Sequence[str] = (),
    pinned: frozenset[str] = frozenset(),
    audio_max: int = 3,
    video_last_n: int = 2,
) -> Selection:
    return select(
        subscriber,
        loudest=loudest,
        order=order,
        pinned=pinned,
        audio_max=audio_max,
        video_last_n=video_last_n,
    )


def test_a_room_is_selective_only_above_the_threshold() -> None:
    assert not is_selective(12, select_above=12)
    assert is_selective(13, select_above=12)


def test_the_loudest_audio_tracks_are_forwarded_but_never_ones_own() -> None:
    loudest = ["ada:mic", "bob:mic", "cy:mic", "dee:mic"]
    assert pick("eve", loudest=loudest).audio == {"ada:mic", "bob:mic", "cy:mic"}
    # Ada's own voice does not count against her three.
    assert pick("ada", loudest=loudest).audio == {"bob:mic", "cy:mic", "dee:mic"}
    assert pick("eve", loudest=loudest, audio_max=1).audio == {"ada:mic"}
    assert pick("eve", loudest=[]).audio == set()


def test_video_comes_from_the_last_speakers_and_the_pinned() -> None:
    order = ["cy", "ada", "bob", "dee"]  # most recent speaker first
    assert pick("eve", order=order).video == {"cy", "ada"}
    assert pick("cy", order=order).video == {"ada", "bob"}  # never one's own
    assert pick("eve", order=order, pinned=frozenset({"dee"})).video == {"cy", "ada", "dee"}


def test_a_selection_tells_audio_by_track_and_video_by_owner() -> None:
    chosen = Selection(audio=frozenset({"ada:mic"}), video=frozenset({"bob"}))
    assert chosen.forwards("audio", "ada:mic", "ada")
    assert not chosen.forwards("audio", "bob:mic", "bob")  # Bob's video, not his voice
    assert chosen.forwards("video", "bob:camera", "bob")
    assert chosen.forwards("video", "bob:screen", "bob")
    assert not chosen.forwards("video", "ada:camera", "ada")


def test_whoever_speaks_moves_to_the_front_loudest_first() -> None:
    assert last_speakers([], ["ada"]) == ["ada"]
    assert last_speakers(["ada", "bob", "cy"], ["cy"]) == ["cy", "ada", "bob"]
    assert last_speakers(["ada", "bob", "cy"], ["cy", "bob"]) == ["cy", "bob", "ada"]
    assert last_speakers(["ada"], ["bob", "bob"]) == ["bob", "ada"]


def test_those_who_never_spoke_follow_in_the_order_they_joined() -> None:
    assert speaking_order(["cy"], ["ada", "bob", "cy", "dee"]) == ["cy", "ada", "bob", "dee"]
    assert speaking_order([], ["ada", "bob"]) == ["ada", "bob"]


def test_a_layer_bitrate_is_smoothed_over_ticks() -> None:
    # 12,500 bytes in a quarter second is 400 kbit/s: the first reading is taken whole, later
    # ones with weight SMOOTHING.
    assert layer_bitrate(0.0, 12_500, 0.25, paused=False) == pytest.approx(400_000)
    assert layer_bitrate(200_000, 12_500, 0.25, paused=False) == pytest.approx(
        (1 - SMOOTHING) * 200_000 + SMOOTHING * 400_000
    )
    steady = 0.0
    for _ in range(300):
        steady = layer_bitrate(steady, 12_500, 0.25, paused=False)
    assert steady == pytest.approx(400_000)
    # A layer that stops sending (and is not paused) drops towards zero.
    assert layer_bitrate(400_000, 0, 0.25, paused=False) == pytest.approx((1 - SMOOTHING) * 400_000)


def test_a_paused_layer_keeps_the_rate_it_had() -> None:
    assert layer_bitrate(400_000, 0, 0.25, paused=True) == 400_000
    # Bytes still arriving (the pause has not reached the publisher yet) count as usual.
    assert layer_bitrate(400_000, 12_500, 0.25, paused=True) == pytest.approx(400_000)


def test_a_tick_of_no_length_does_not_divide_by_zero() -> None:
    assert layer_bitrate(0.0, 1_000, 0.0, paused=False) > 0


def test_layers_nobody_takes_are_paused() -> None:
    assert layers_to_pause(["2", "0", "1"], {"0"}) == ["1", "2"]
    assert layers_to_pause(["0", "1"], {"0", "1"}) == []
    assert layers_to_pause(["0", "1"], ()) == ["0", "1"]

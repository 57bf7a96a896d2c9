"""The simulcast layers a publisher declares (sfu.layer_declarations.check_layers), as a
spec: what is published anew, and every declaration refused with what is wrong."""

from __future__ import annotations

import pytest

from sfu.layer_declarations import INVALID_LAYERS, Declared, InvalidLayers, Section, check_layers
from signaling import protocol as p

VIDEO, AUDIO = Section("video", True), Section("audio", True)
STOPPED = Section("video", False)
# Camera in two layers, a microphone, a screen share.
OFFER = {"0": VIDEO, "1": VIDEO, "2": AUDIO, "3": VIDEO}
CAM: dict[str, Declared] = {"0": ("cam", 0, 180), "1": ("cam", 1, 360)}


def refused(
    layers: dict[str, Declared],
    offered: dict[str, Section] = OFFER,
    published: dict[str, Declared | None] | None = None,
) -> str:
    with pytest.raises(InvalidLayers) as caught:
        check_layers(layers, offered, published or {})
    assert caught.value.code == INVALID_LAYERS
    return str(caught.value)


def test_the_code_is_the_protocols() -> None:
    assert INVALID_LAYERS == p.ErrorCode.INVALID_LAYERS


def test_layers_of_new_tracks_are_published() -> None:
    assert check_layers(CAM, OFFER, {}) == CAM
    assert check_layers({}, OFFER, {}) == {}
    single = {"3": ("screen-hd", 2, 1080)}  # one layer, any quality
    assert check_layers(single, OFFER, {}) == single


def test_a_source_name_that_could_be_a_mid_is_refused() -> None:
    # "2" is the microphone's mid here; "7" is no mid yet, but the next section may be.
    assert "'2'" in refused({"0": ("2", 0, 180), "1": ("2", 1, 360)})
    assert "all digits" in refused({"0": ("7", 0, 180)})
    assert "mid of a media section" in refused({"a": ("b", 0, 180)}, {"a": VIDEO, "b": VIDEO})
    # ... of a track published before, too.
    assert "mid of a media section" in refused(
        {"x": ("cam-a", 0, 180)}, {"x": VIDEO}, {"cam-a": None}
    )


def test_each_quality_once_per_source() -> None:
    message = refused({"0": ("cam", 1, 180), "1": ("cam", 1, 360)})
    assert "quality 1 twice" in message and "'0'" in message and "'1'" in message
    # The same quality in two sources is fine.
    both = {"0": ("cam", 0, 180), "3": ("screen", 0, 720)}
    assert check_layers(both, OFFER, {}) == both


def test_taller_layers_have_higher_quality() -> None:
    assert "shorter" in refused({"0": ("cam", 0, 360), "1": ("cam", 1, 180)})
    same = {"0": ("cam", 0, 360), "1": ("cam", 1, 360)}  # two bitrates of one size
    assert check_layers(same, OFFER, {}) == same


def test_a_layer_is_a_video_section_of_the_offer() -> None:
    assert "no media section '9'" in refused({"9": ("cam", 0, 180)})
    assert "audio section" in refused({"2": ("cam", 0, 180)})
    # A section the offer stops sending on: its declaration no longer matters.
    offered = {**OFFER, "1": STOPPED}
    assert check_layers(CAM, offered, {"0": CAM["0"], "1": CAM["1"]}) == {}


def test_published_tracks_keep_what_they_are() -> None:
    published: dict[str, Declared | None] = {"0": CAM["0"], "1": CAM["1"], "2": None}
    # Sending the same declarations again (and a new track) is fine.
    screen = {"3": ("screen", 0, 720)}
    assert check_layers({**CAM, **screen}, OFFER, published) == screen
    assert "already published as layer ('cam', 0, 180)" in refused(
        {"0": ("other", 0, 180)}, OFFER, published
    )
    assert "already published as a plain track" in refused(
        {"3": ("screen", 0, 720)}, OFFER, {"3": None}
    )


def test_a_source_gets_all_its_layers_in_one_offer() -> None:
    # Subscribers already take "cam" as it is: a late third layer would reach nobody.
    offered = {**OFFER, "4": VIDEO}
    published: dict[str, Declared | None] = {"0": CAM["0"], "1": CAM["1"]}
    assert "already published" in refused({"4": ("cam", 2, 720)}, offered, published)
    # Once all its layers are stopped, the name is free again.
    offered = {"0": STOPPED, "1": STOPPED, "4": VIDEO}
    assert check_layers({"4": ("cam", 0, 720)}, offered, published) == {"4": ("cam", 0, 720)}


def test_a_new_mid_is_not_a_published_source_name() -> None:
    published: dict[str, Declared | None] = {"0": ("cam", 0, 180)}
    assert "name of a published source" in refused({}, {"0": VIDEO, "cam": VIDEO}, published)

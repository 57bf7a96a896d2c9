"""Derived media, called directly (no pool): images, GPS, bombs, audio, video, PDF."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from media_store import avmedia, images
from media_store.derive import DeriveJob, DeriveResult, derive
from media_store.errors import MediaError
from media_store.sniff import SNIFF_BYTES, Sniffed, sniff
from tests import media_files


def run(tmp_path: Path, data: bytes, mime: str, kind: str, **kw: object) -> DeriveResult:
    source = tmp_path / "in"
    source.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    max_pixels = kw.get("max_pixels", 80_000_000)
    assert isinstance(max_pixels, int)
    job = DeriveJob(str(source), mime, kind, str(out), bool(kw.get("strip", True)), max_pixels)
    return derive(job)


def test_jpeg_thumbnails_and_orientation(tmp_path: Path) -> None:
    im = Image.new("RGB", (400, 200), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: displayed as 200x400
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif.tobytes())
    result = run(tmp_path, buf.getvalue(), "image/jpeg", "image")
    assert (result.width, result.height) == (200, 400)
    roles = {f.role: f for f in result.files}
    with Image.open(roles["thumb_large"].path) as large:
        assert large.size == (200, 400)  # upright, not enlarged
    with Image.open(roles["thumb_small"].path) as small:
        assert small.size == (160, 320)
    assert not result.gps_stripped


def test_gps_stripped_from_png(tmp_path: Path) -> None:
    im = Image.new("RGB", (50, 50), "blue")
    exif = Image.Exif()
    exif[0x8825] = media_files.GPS
    buf = io.BytesIO()
    im.save(buf, format="PNG", exif=exif.tobytes())
    assert media_files.has_gps(buf.getvalue())
    result = run(tmp_path, buf.getvalue(), "image/png", "image")
    assert result.gps_stripped and result.replaced_path is not None
    assert not media_files.has_gps(Path(result.replaced_path).read_bytes())
    kept = run(tmp_path, buf.getvalue(), "image/png", "image", strip=False)
    assert kept.replaced_path is None


def test_jpeg_rewrite_drops_xmp_and_keeps_scan() -> None:
    data = media_files.jpeg((64, 64), gps=True)
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta>GPSLatitude</x:xmpmeta>"
    segment = b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp
    with_xmp = data[:2] + segment + data[2:]
    cleaned = images.rewrite_jpeg(with_xmp, b"")
    assert b"GPSLatitude" not in cleaned
    assert cleaned.endswith(data[data.index(b"\xff\xda") :])
    with pytest.raises(MediaError):
        images.rewrite_jpeg(b"not a jpeg", b"")


def test_bomb_and_corrupt_images(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as bomb:
        run(tmp_path, media_files.png_bomb(), "image/png", "image")
    assert bomb.value.code == "image_too_large"
    with pytest.raises(MediaError) as small_limit:
        run(tmp_path, media_files.png((100, 100)), "image/png", "image", max_pixels=5000)
    assert small_limit.value.code == "image_too_large"
    data = media_files.png((300, 300), mode="RGB")
    with pytest.raises(MediaError) as corrupt:
        run(tmp_path, data[:200], "image/png", "image")
    assert corrupt.value.code == "corrupt_media"


def test_voice_note(tmp_path: Path) -> None:
    quiet = media_files.wav(seconds=1.5, level=0.05)
    result = run(tmp_path, quiet, "audio/x-wav", "audio")
    assert result.duration == pytest.approx(1.5, abs=0.01)
    assert result.waveform is not None and len(result.waveform) == 15
    (voice,) = result.files
    assert voice.role == "voice" and voice.mime == "audio/ogg"
    ogg = Path(voice.path).read_bytes()
    assert media_files.audio_duration(ogg) == pytest.approx(1.5, abs=0.1)
    # Peak-normalized: the quiet tone came out louder.
    import av
    import numpy as np

    with av.open(voice.path, "r") as container:
        peak = max(
            float(np.abs(frame.to_ndarray()).max())
            for frame in container.decode(container.streams.audio[0])
        )
    assert peak > 0.3


def test_webm_holding_only_sound_is_audio(tmp_path: Path) -> None:
    # What Chromium's MediaRecorder makes of a voice note: Opus in WebM, no video track.
    data = media_files.webm(tmp_path / "note.webm", seconds=1.0)
    sniffed = sniff(data[:SNIFF_BYTES])
    assert sniffed.mime == "video/webm"  # the magic bytes alone cannot tell
    result = run(tmp_path, data, sniffed.mime, sniffed.kind)
    assert result.retyped == Sniffed("audio/webm", "audio")
    assert result.duration == pytest.approx(1.0, abs=0.05)
    (voice,) = result.files
    assert voice.role == "voice" and voice.mime == "audio/ogg"
    assert media_files.audio_duration(Path(voice.path).read_bytes()) == pytest.approx(1.0, abs=0.1)


def test_webm_with_video_stays_video(tmp_path: Path) -> None:
    data = media_files.webm(tmp_path / "clip.webm", seconds=1.0, video=True)
    sniffed = sniff(data[:SNIFF_BYTES])
    result = run(tmp_path, data, sniffed.mime, sniffed.kind)
    assert result.retyped is None
    assert (result.width, result.height) == (64, 48)
    assert {f.role for f in result.files} == {"thumb_small", "thumb_large"}


def test_waveform_levels() -> None:
    assert avmedia.waveform([]) == []
    assert avmedia.waveform([0.0, 0.0]) == [0, 0]
    bars = avmedia.waveform([0.1] * 100 + [0.5] * 100, bars=4)
    assert bars == [51, 51, 255, 255]


def test_corrupt_audio_and_video(tmp_path: Path) -> None:
    with pytest.raises(MediaError) as audio:
        run(tmp_path, b"RIFF\x00\x00\x00\x00WAVEfmt " + b"\x00" * 40, "audio/x-wav", "audio")
    assert audio.value.code == "corrupt_media"
    with pytest.raises(MediaError) as video:
        run(tmp_path, b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100, "video/mp4", "video")
    assert video.value.code == "corrupt_media"


def test_video_poster(tmp_path: Path) -> None:
    data = media_files.mp4(tmp_path / "clip.mp4", frames=24, size=(320, 240))
    result = run(tmp_path, data, "video/mp4", "video")
    assert (result.width, result.height) == (320, 240)
    assert result.duration == pytest.approx(2.0, abs=0.1)
    assert {f.role for f in result.files} == {"thumb_small", "thumb_large"}


def test_pdf_preview_and_broken_pdf(tmp_path: Path) -> None:
    result = run(tmp_path, media_files.pdf(), "application/pdf", "document")
    assert {f.role for f in result.files} == {"thumb_small", "thumb_large"}
    broken = run(tmp_path, b"%PDF-1.4\nnot really", "application/pdf", "document")
    assert broken.files == []

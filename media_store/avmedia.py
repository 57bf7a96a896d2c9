"""Audio and video with PyAV: duration, a video's poster frame, a voice note normalized to
Ogg/Opus with a waveform summary. CPU work, run in the worker processes.
"""

from __future__ import annotations

import fractions
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import av
import numpy as np
from PIL import Image

from media_store.errors import MediaError

RATE: Final = 48000
# Peak level measured per window of this many samples (0.1 s).
WINDOW: Final = RATE // 10
WAVEFORM_BARS: Final = 64
VOICE_BITRATE: Final = 32000
# Longer recordings are music or meetings, not voice notes: no transcoding, no waveform.
VOICE_MAX_S: Final = 15 * 60.0
# Normalize to this peak (-1 dBFS), with at most this much gain (quiet rooms stay quiet).
TARGET_PEAK: Final = 10 ** (-1 / 20)
MAX_GAIN: Final = 10.0
_AV_ERRORS: Final = (av.FFmpegError, OSError, ValueError, IndexError, StopIteration)


def corrupt(what: str) -> MediaError:
    return MediaError(422, "corrupt_media", f"the {what} cannot be decoded")


@dataclass
class VideoInfo:
    duration: float | None
    width: int
    height: int
    poster: Image.Image | None


@dataclass
class AudioInfo:
    duration: float
    waveform: list[int] | None
    voice: bool  # an Ogg/Opus version was written


def has_video(path: Path) -> bool:
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video)
    except _AV_ERRORS:
        raise corrupt("video") from None


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return float(container.duration / av.time_base)
    return None


def probe_video(path: Path, max_pixels: int) -> VideoInfo:
    """Size, duration and the first decodable frame as a poster."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if width * height > max_pixels:
                raise MediaError(
                    422, "image_too_large", f"{width}x{height} video exceeds {max_pixels} pixels"
                )
            duration = _duration(container, stream)
            poster = None
            for frame in container.decode(stream):
                poster = frame.to_image()  # type: ignore[no-untyped-call]
                break
    except MediaError:
        raise
    except _AV_ERRORS:
        raise corrupt("video") from None
    if poster is None:
        raise corrupt("video")
    return VideoInfo(duration, width, height, poster)


def _mono_frames(path: Path) -> Iterator[np.ndarray[Any, np.dtype[np.float32]]]:
    """Decoded audio as float32 mono at ``RATE``."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=RATE)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1).astype(np.float32, copy=False)


def waveform(peaks: list[float], bars: int = WAVEFORM_BARS) -> list[int]:
    """Window peaks grouped into ``bars`` levels 0..255, relative to the loudest."""
    if not peaks:
        return []
    values = np.asarray(peaks, dtype=np.float64)
    groups = np.array_split(values, min(bars, len(values)))
    levels = np.array([g.max() for g in groups])
    top = float(levels.max())
    if top <= 0:
        return [0] * len(levels)
    return [round(float(v)) for v in np.clip(levels / top * 255, 0, 255)]


def audio_probe(path: Path) -> tuple[float | None, bool]:
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise corrupt("audio")
            return _duration(container, container.streams.audio[0]), True
    except MediaError:
        raise
    except _AV_ERRORS:
        raise corrupt("audio") from None


def process_audio(path: Path, voice_out: Path) -> AudioInfo:
    """Duration and waveform, and for voice-note lengths an Ogg/Opus copy, peak-normalized."""
    declared, _ = audio_probe(path)
    if declared is not None and declared > VOICE_MAX_S:
        return AudioInfo(declared, None, voice=False)
    peaks: list[float] = []
    carry = np.zeros(0, np.float32)
    samples = 0
    try:
        for chunk in _mono_frames(path):
            samples += len(chunk)
            carry = np.concatenate([carry, np.abs(chunk)])
            whole = len(carry) // WINDOW * WINDOW
            if whole:
                peaks.extend(carry[:whole].reshape(-1, WINDOW).max(axis=1).tolist())
                carry = carry[whole:]
            if samples > VOICE_MAX_S * RATE:
                return AudioInfo(samples / RATE, None, voice=False)
    except _AV_ERRORS:
        raise corrupt("audio") from None
    if len(carry):
        peaks.append(float(carry.max()))
    if samples == 0:
        raise corrupt("audio")
    top = max(peaks)
    gain = min(MAX_GAIN, TARGET_PEAK / top) if top > 0 else 1.0
    _encode_opus(path, voice_out, gain)
    return AudioInfo(samples / RATE, waveform(peaks), voice=True)


def _encode_opus(path: Path, out_path: Path, gain: float) -> None:
    with av.open(str(out_path), "w", format="ogg") as out:
        stream = out.add_stream("libopus", rate=RATE, layout="mono")
        stream.bit_rate = VOICE_BITRATE
        pts = 0
        for chunk in _mono_frames(path):
            data = np.clip(chunk * gain, -1.0, 1.0).astype(np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(data, format="flt", layout="mono")
            frame.sample_rate = RATE
            frame.pts = pts
            frame.time_base = fractions.Fraction(1, RATE)
            pts += data.shape[1]
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)

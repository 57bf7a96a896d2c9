"""Synthetic media that identifies its publisher, and checks on what a subscriber decodes."""

from __future__ import annotations

import asyncio
import fractions
import time
from typing import Final

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import VideoStreamTrack

SAMPLE_RATE: Final = 48000
AUDIO_PTIME: Final = 0.02


class ColorTrack(VideoStreamTrack):
    """A solid-colour picture: each publisher gets its own colour."""

    def __init__(self, rgb: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> None:
        super().__init__()
        width, height = size
        image = np.zeros((height, width, 3), np.uint8)
        image[:] = rgb
        self._image = image

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self._image, format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


class GrainTrack(ColorTrack):
    """A colour with a fine grain over its top half: it costs a VP8 encoder bits in
    proportion to its area (some 17, 47 and 175 kbit/s at 160x96, 320x192 and 640x384),
    where a solid colour costs next to nothing at any size. Its mean colour is the colour."""

    FRAMES = 8  # grain patterns, cycled

    def __init__(self, rgb: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> None:
        super().__init__(rgb, size)
        rng = np.random.default_rng(sum(rgb) + size[0])
        height = size[1]
        self._images = []
        for _ in range(self.FRAMES):
            image = self._image.astype(np.int16)
            image[: height // 2] += rng.integers(-2, 3, image[: height // 2].shape, np.int16)
            self._images.append(np.clip(image, 0, 255).astype(np.uint8))
        self._next = 0

    async def recv(self) -> av.VideoFrame:
        self._image = self._images[self._next % self.FRAMES]
        self._next += 1
        return await super().recv()


class ToneTrack(MediaStreamTrack):
    """A sine tone: each publisher gets its own frequency."""

    kind = "audio"

    def __init__(self, frequency: float, amplitude: int = 8000) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._samples = int(SAMPLE_RATE * AUDIO_PTIME)
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        if self._start is None:
            self._start = time.monotonic()
        else:
            wait = self._start + self._pts / SAMPLE_RATE - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        t = (np.arange(self._samples) + self._pts) / SAMPLE_RATE
        wave = (np.sin(2 * np.pi * self.frequency * t) * self.amplitude).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(wave.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._pts += self._samples
        return frame


def mean_rgb(frame: av.VideoFrame) -> tuple[float, float, float]:
    rgb = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
    return (float(rgb[0]), float(rgb[1]), float(rgb[2]))


def close_colour(
    seen: tuple[float, float, float], want: tuple[int, int, int], tol: float = 12
) -> bool:
    return all(abs(a - b) <= tol for a, b in zip(seen, want, strict=True))


def dominant_frequency(frames: list[av.AudioFrame]) -> float:
    samples = np.concatenate(
        [f.to_ndarray().reshape(-1, len(f.layout.channels))[:, 0] for f in frames]
    )
    samples = samples.astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    rate = frames[0].sample_rate
    return float(np.argmax(spectrum) * rate / len(samples))

"""Small media files made on the spot for the media store's tests (no binary fixtures)."""

from __future__ import annotations

import fractions
import io
import struct
import wave
import zlib
from pathlib import Path

import av
import numpy as np
from PIL import ExifTags, Image

GPS = {
    ExifTags.GPS.GPSLatitudeRef: "N",
    ExifTags.GPS.GPSLatitude: (52.0, 31.0, 12.0),
    ExifTags.GPS.GPSLongitudeRef: "E",
    ExifTags.GPS.GPSLongitude: (13.0, 24.0, 0.0),
}


def jpeg(size: tuple[int, int] = (640, 480), *, gps: bool = False, color: str = "teal") -> bytes:
    im = Image.new("RGB", size, color)
    # Some structure so that thumbnails are not trivially uniform.
    for x in range(0, size[0], 16):
        im.putpixel((x, size[1] // 2), (255, 0, 0))
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "HuddleCam"
    if gps:
        exif[ExifTags.IFD.GPSInfo] = GPS
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def png(size: tuple[int, int] = (300, 200), mode: str = "RGBA") -> bytes:
    im = Image.new(mode, size, (10, 200, 30, 128) if mode == "RGBA" else (10, 200, 30))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims a huge picture."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def has_gps(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as im:
        return ExifTags.IFD.GPSInfo in im.getexif()


def wav(seconds: float = 2.0, rate: int = 44100, freq: float = 440.0, level: float = 0.2) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * freq * t) * level * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def mp4(path: Path, frames: int = 12, size: tuple[int, int] = (160, 120), fps: int = 12) -> bytes:
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            image = np.zeros((size[1], size[0], 3), np.uint8)
            image[:, :, 0] = (i * 20) % 256
            image[:, :, 2] = 200
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            frame.time_base = fractions.Fraction(1, fps)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path.read_bytes()


def webm(path: Path, *, seconds: float = 1.0, video: bool = False, rate: int = 48000) -> bytes:
    """Opus audio in WebM, as Chromium's MediaRecorder records a voice note; with ``video``,
    a VP8 track beside it (a camera recording)."""
    with av.open(str(path), "w", format="webm") as out:
        audio = out.add_stream("libopus", rate=rate, layout="mono")
        picture = out.add_stream("libvpx", rate=10) if video else None
        if picture is not None:
            picture.width, picture.height = 64, 48
            picture.pix_fmt = "yuv420p"
            for i in range(int(seconds * 10)):
                image = np.full((48, 64, 3), (i * 25) % 256, np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = i
                frame.time_base = fractions.Fraction(1, 10)
                for packet in picture.encode(frame):
                    out.mux(packet)
            for packet in picture.encode(None):
                out.mux(packet)
        t = np.arange(int(seconds * rate)) / rate
        samples = (np.sin(2 * np.pi * 440.0 * t) * 0.3).astype(np.float32)
        for start in range(0, len(samples), 960):
            chunk = samples[start : start + 960].reshape(1, -1)
            sound = av.AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            sound.sample_rate = rate
            sound.pts = start
            sound.time_base = fractions.Fraction(1, rate)
            for packet in audio.encode(sound):
                out.mux(packet)
        for packet in audio.encode(None):
            out.mux(packet)
    return path.read_bytes()


def pdf() -> bytes:
    im = Image.new("RGB", (300, 420), "white")
    for y in range(40, 380, 20):
        for x in range(30, 270):
            im.putpixel((x, y), (0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, format="PDF")
    return buf.getvalue()


def exe() -> bytes:
    return b"MZ\x90\x00" + b"\x00" * 60 + b"This program cannot be run in DOS mode." + b"\x00" * 200


def audio_duration(data: bytes) -> float:
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.audio[0]
        samples = 0
        for frame in container.decode(stream):
            samples += frame.samples
        return samples / float(stream.codec_context.sample_rate or 48000)

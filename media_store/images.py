"""Still images: checks against corrupt files and decompression bombs, EXIF GPS removal,
thumbnails. CPU work, run in the worker processes (``media_store.derive``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Final

from PIL import Image, ImageOps, UnidentifiedImageError

from media_store.errors import MediaError

# Longest edge of each thumbnail size.
THUMB_EDGES: Final = {"small": 320, "large": 1280}
THUMB_QUALITY: Final = 80
# libwebp effort 0-6: 2 is about twice as fast as the default 4 for a size within 2%.
THUMB_METHOD: Final = 2
THUMB_MIME: Final = "image/webp"
_GPS_IFD: Final = 0x8825
_XMP_PREFIX: Final = b"http://ns.adobe.com/xap/1.0/"
_RESAVE_FORMATS: Final = {"PNG": {}, "WEBP": {"quality": 95}, "TIFF": {}}


def corrupt(what: str) -> MediaError:
    return MediaError(422, "corrupt_media", f"the {what} cannot be decoded")


def open_checked(
    path: Path, max_pixels: int, *, draft_edge: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Open and decode an image, refusing bombs before any pixel is decoded; returns it
    with its full size. ``draft_edge`` lets JPEG decode at a reduced scale that still
    covers that edge (DCT scaling: much faster, and every byte is still decoded)."""
    # Our own limit replaces Pillow's warning/error pair (checked before load).
    Image.MAX_IMAGE_PIXELS = None
    try:
        im = Image.open(path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise corrupt("image") from None
    width, height = im.size
    if width <= 0 or height <= 0 or width * height > max_pixels:
        im.close()
        raise MediaError(
            422, "image_too_large", f"{width}x{height} pixels exceeds the limit of {max_pixels}"
        )
    if draft_edge is not None and im.format == "JPEG":
        im.draft("RGB", (draft_edge, draft_edge))
    try:
        im.load()
    except (OSError, ValueError, SyntaxError, MemoryError):
        im.close()
        raise corrupt("image") from None
    return im, (width, height)


def has_gps(im: Image.Image) -> bool:
    exif = im.getexif()
    return _GPS_IFD in exif


def strip_gps(im: Image.Image, source: Path, target: Path) -> bool:
    """Write ``source`` without its location to ``target``; False if there was none.

    JPEG is rewritten segment by segment (no re-encoding: the picture stays bit-identical);
    PNG, WebP and TIFF are saved again with the cleaned EXIF.
    """
    if not has_gps(im):
        return False
    exif = im.getexif()
    del exif[_GPS_IFD]
    if im.format == "JPEG":
        target.write_bytes(rewrite_jpeg(source.read_bytes(), exif.tobytes()))
        return True
    options = _RESAVE_FORMATS.get(im.format or "")
    if options is None:
        raise MediaError(
            422, "cannot_strip_location", f"location data cannot be removed from {im.format}"
        )
    im.save(target, format=im.format, exif=exif.tobytes(), **options)
    return True


def rewrite_jpeg(data: bytes, exif: bytes) -> bytes:
    """``data`` with its EXIF segment replaced by ``exif`` and XMP segments dropped."""
    if data[:2] != b"\xff\xd8":
        raise corrupt("image")
    out = [b"\xff\xd8"]
    i = 2
    while i < len(data) - 1:
        if data[i] != 0xFF:
            raise corrupt("image")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: the rest is entropy-coded data
            out.append(data[i:])
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            out.append(data[i : i + 2])
            i += 2
            continue
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        segment = data[i : i + 2 + length]
        if length < 2 or len(segment) < 2 + length:
            raise corrupt("image")
        i += 2 + length
        if marker == 0xE1 and segment[4:10] == b"Exif\x00\x00":
            if exif and len(exif) <= 65533:
                out.append(b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif)
            continue
        if marker == 0xE1 and segment[4:].startswith(_XMP_PREFIX):
            continue  # XMP may repeat the location (exif:GPSLatitude)
        out.append(segment)
    return b"".join(out)


def thumbnails(im: Image.Image, out_dir: Path) -> dict[str, Path]:
    """WebP thumbnails, upright (EXIF orientation applied), never larger than the image."""
    base = ImageOps.exif_transpose(im)
    if base.mode not in ("RGB", "RGBA"):
        base = base.convert(
            "RGBA" if "A" in base.getbands() or "transparency" in base.info else "RGB"
        )
    out: dict[str, Path] = {}
    for name, edge in sorted(THUMB_EDGES.items(), key=lambda kv: -kv[1]):
        thumb = base.copy()
        thumb.thumbnail((edge, edge), Image.Resampling.LANCZOS, reducing_gap=3.0)
        path = out_dir / f"thumb-{name}.webp"
        buf = io.BytesIO()
        thumb.save(buf, format="WEBP", quality=THUMB_QUALITY, method=THUMB_METHOD)
        path.write_bytes(buf.getvalue())
        out[name] = path
        base = thumb  # the smaller size comes from the larger: much cheaper
    return out


def dimensions(im: Image.Image, size: tuple[int, int]) -> tuple[int, int]:
    """Width and height as displayed (EXIF orientation 5-8 swaps them)."""
    width, height = size
    if im.getexif().get(0x0112) in (5, 6, 7, 8):
        return height, width
    return width, height

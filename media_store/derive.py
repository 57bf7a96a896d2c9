"""One job per upload for the worker processes: check the content, strip location data,
make thumbnails, posters, previews and voice notes. Runs outside the event loop's process;
everything crossing the process boundary is a plain dataclass.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from PIL import Image

from media_store import avmedia, images, sniff
from media_store.errors import MediaError

log = logging.getLogger("huddle.media.derive")

# PDF previews render the first page so that its longer edge has this many pixels.
PDF_PREVIEW_EDGE: Final = 1280
HASH_CHUNK: Final = 1024 * 1024


@dataclass(frozen=True)
class DeriveJob:
    path: str
    mime: str
    kind: str
    out_dir: str
    strip_gps: bool
    max_pixels: int


@dataclass(frozen=True)
class DerivedFile:
    role: str  # thumb_small, thumb_large, voice
    path: str
    digest: str
    size: int
    mime: str


@dataclass
class DeriveResult:
    # Set when the content itself was rewritten (location removed): the file to store.
    replaced_path: str | None = None
    replaced_digest: str | None = None
    replaced_size: int | None = None
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    waveform: list[int] | None = None
    gps_stripped: bool = False
    # Set when the tracks tell more than the magic bytes did (a WebM holding sound only).
    retyped: sniff.Sniffed | None = None
    files: list[DerivedFile] = field(default_factory=list)


def sha256_file(path: Path) -> tuple[str, int]:
    hasher = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def _derived(role: str, path: Path, mime: str) -> DerivedFile:
    digest, size = sha256_file(path)
    return DerivedFile(role, str(path), digest, size, mime)


def _add_thumbnails(result: DeriveResult, im: Image.Image, out_dir: Path) -> None:
    for name, path in images.thumbnails(im, out_dir).items():
        result.files.append(_derived(f"thumb_{name}", path, images.THUMB_MIME))


def derive(job: DeriveJob) -> DeriveResult:
    """What an upload yields. Raises ``MediaError`` (4xx) for content that is refused."""
    source = Path(job.path)
    out_dir = Path(job.out_dir)
    result = DeriveResult()
    if job.kind == "image":
        if job.mime not in ("image/heic", "image/avif"):
            _image(job, source, out_dir, result)
    elif job.kind == "video":
        if avmedia.has_video(source):
            info = avmedia.probe_video(source, job.max_pixels)
            result.width, result.height, result.duration = info.width, info.height, info.duration
            if info.poster is not None:
                _add_thumbnails(result, info.poster, out_dir)
        else:  # an MP4/WebM container holding only sound
            _audio(source, out_dir, result)
            if sniff.needs_tracks(job.mime):
                result.retyped = sniff.without_video(sniff.Sniffed(job.mime, "video"))
    elif job.kind == "audio":
        _audio(source, out_dir, result)
    elif job.mime == "application/pdf":
        _pdf(source, out_dir, result)
    return result


def _image(job: DeriveJob, source: Path, out_dir: Path, result: DeriveResult) -> None:
    im, size = images.open_checked(
        source, job.max_pixels, draft_edge=2 * max(images.THUMB_EDGES.values())
    )
    with im:
        result.width, result.height = images.dimensions(im, size)
        if job.strip_gps:
            cleaned = out_dir / "content"
            if images.strip_gps(im, source, cleaned):
                digest, nbytes = sha256_file(cleaned)
                result.replaced_path, result.replaced_digest = str(cleaned), digest
                result.replaced_size = nbytes
                result.gps_stripped = True
        _add_thumbnails(result, im, out_dir)


def _audio(source: Path, out_dir: Path, result: DeriveResult) -> None:
    voice = out_dir / "voice.ogg"
    info = avmedia.process_audio(source, voice)
    result.duration = info.duration
    result.waveform = info.waveform
    if info.voice:
        result.files.append(_derived("voice", voice, "audio/ogg"))


def _pdf(source: Path, out_dir: Path, result: DeriveResult) -> None:
    """First-page preview; a PDF that PDFium cannot render is kept, just without one."""
    import pypdfium2 as pdfium

    try:
        pdf = pdfium.PdfDocument(str(source))
    except pdfium.PdfiumError:
        log.info("no PDF preview: PDFium cannot open the file")
        return
    try:
        if len(pdf) == 0:
            return
        page = pdf[0]
        width, height = page.get_size()
        scale = min(PDF_PREVIEW_EDGE / max(width, height, 1.0), 4.0)
        bitmap = page.render(scale=scale)
        preview = bitmap.to_pil()
        result.width, result.height = int(width), int(height)
        _add_thumbnails(result, preview, out_dir)
        with contextlib.suppress(Exception):
            page.close()
    except pdfium.PdfiumError:
        log.info("no PDF preview: PDFium cannot render the first page")
    finally:
        pdf.close()


def check_worker() -> bool:
    """A no-op job: starts a worker process and proves the pool works."""
    return isinstance(MediaError(400, "x", "y"), Exception)

"""What a file is, from its first bytes; names and headers that are safe to send back.

The client's claimed type and file name extension are never trusted: the type comes from
magic bytes (the ``filetype`` signatures plus a few of our own for executables, scripts,
text and markup). WebM and Matroska say nothing of their tracks in their magic bytes: the
media workers, which open the container anyway, retype one holding no video as audio
(``without_video``). Pure module: no I/O.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from typing import Final, Literal

import filetype

# Bytes of the head of a file that sniffing looks at (filetype reads at most 8 KiB; zip
# based office formats name their parts within the first few hundred bytes).
SNIFF_BYTES: Final = 8192

Kind = Literal["image", "audio", "video", "document", "other"]

OCTET_STREAM: Final = "application/octet-stream"

# Raster formats Pillow decodes and we make thumbnails of.
THUMBNAIL_IMAGES: Final = frozenset(
    {"image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff"}
)
DOCUMENTS: Final = frozenset(
    {
        "application/pdf",
        "application/msword",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.oasis.opendocument.text",
        "application/vnd.ms-excel",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/vnd.oasis.opendocument.spreadsheet",
        "application/vnd.ms-powerpoint",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "application/vnd.oasis.opendocument.presentation",
        "application/rtf",
        "application/epub+zip",
        "application/zip",
        "text/plain",
    }
)
# Types a browser may render in place without risk to the origin that serves them; every
# other type is sent as an attachment (HTML or SVG inline would run script on our origin).
INLINE_SAFE: Final = THUMBNAIL_IMAGES | {"application/pdf", "text/plain"}

_MACHO_MAGICS: Final = (
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",  # fat Mach-O (also a Java class file: refused either way)
)


@dataclass(frozen=True)
class Sniffed:
    mime: str
    kind: Kind


def sniff(head: bytes) -> Sniffed:
    """The type of a file from its first bytes (``SNIFF_BYTES`` of them, or all of a short one)."""
    if head.startswith(b"MZ"):
        return Sniffed("application/x-msdownload", "other")
    if head.startswith(b"\x7fELF"):
        # e_type 3 (ET_DYN) is a shared object or a PIE executable: both run.
        return Sniffed("application/x-executable", "other")
    if head[:4] in _MACHO_MAGICS:
        return Sniffed("application/x-mach-binary", "other")
    if head.startswith(b"dex\n"):
        return Sniffed("application/x-dex", "other")
    if head.startswith(b"#!"):
        return Sniffed("application/x-shellscript", "other")
    guessed = filetype.guess(head) if head else None
    if guessed is not None:
        mime = str(guessed.mime)
        if mime == "application/zip":
            return Sniffed(_zip_flavour(head), "document")
        return Sniffed(mime, _kind(mime))
    text = _as_text(head)
    if text is not None:
        lowered = text.lstrip("\ufeff \t\r\n").lower()
        if lowered.startswith(("<!doctype html", "<html", "<script")):
            return Sniffed("text/html", "other")
        if lowered.startswith("<?xml") or lowered.startswith("<svg"):
            return Sniffed("image/svg+xml" if "<svg" in lowered else "application/xml", "other")
        return Sniffed("text/plain", "document")
    return Sniffed(OCTET_STREAM, "other")


# WebM and Matroska types by what their magic bytes say (always video: the EBML header does
# not tell) and what a file holding no video track is stored as. Chromium's MediaRecorder
# records voice notes only as Opus in WebM, and those are sound.
_MATROSKA_AUDIO: Final = {"video/webm": "audio/webm", "video/x-matroska": "audio/x-matroska"}


def needs_tracks(mime: str) -> bool:
    """Whether the type sniffed from magic bytes depends on the container's tracks."""
    return mime in _MATROSKA_AUDIO


def without_video(sniffed: Sniffed) -> Sniffed:
    """The type of a file ``sniff`` typed ``sniffed`` once its tracks show it has no video."""
    audio = _MATROSKA_AUDIO.get(sniffed.mime)
    return Sniffed(audio, "audio") if audio is not None else sniffed


def _zip_flavour(head: bytes) -> str:
    if b"AndroidManifest.xml" in head or b"classes.dex" in head:
        return "application/vnd.android.package-archive"
    if b"META-INF/MANIFEST.MF" in head:
        return "application/java-archive"
    return "application/zip"


def _kind(mime: str) -> Kind:
    major = mime.split("/", 1)[0]
    if major == "image" and mime in THUMBNAIL_IMAGES | {"image/heic", "image/avif"}:
        return "image"
    if major == "audio":
        return "audio"
    if major == "video":
        return "video"
    if mime in DOCUMENTS:
        return "document"
    return "other"


def _as_text(head: bytes) -> str | None:
    if not head or b"\x00" in head:
        return None
    # The head may end inside a multi-byte character: drop up to 3 trailing bytes.
    for cut in range(4):
        try:
            return head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


def denied(mime: str, deny: list[str]) -> bool:
    """Whether ``mime`` is on the deny list (entries may end in ``/*``: a whole major type)."""
    for entry in deny:
        entry = entry.strip().lower()
        if entry.endswith("/*") and mime.startswith(entry[:-1]):
            return True
        if mime == entry:
            return True
    return False


_UNSAFE_NAME_CHARS: Final = re.compile(r'[\x00-\x1f\x7f-\x9f\u2028\u2029"\\/:*?<>|]+')
MAX_NAME_BYTES: Final = 200


def safe_name(name: str | None) -> str:
    """A display/download name with no path, no control or format characters and a bounded
    length. Format characters (Unicode category Cf: bidi embeddings, overrides and isolates,
    LRM/RLM/ALM, zero-width spaces and joiners, BOM) are dropped: they are invisible, and
    the bidi ones reorder what a list shows (``report<U+202E>txt.exe`` reads as
    ``reportexe.txt``)."""
    if not name:
        return "file"
    name = "".join(c for c in name if unicodedata.category(c) != "Cf")
    name = unicodedata.normalize("NFC", name)
    # Keep only the last path component, whichever separator the client used.
    name = re.split(r"[\\/]", name)[-1]
    name = _UNSAFE_NAME_CHARS.sub("_", name).strip(" .")
    if not name:
        return "file"
    encoded = name.encode("utf-8")
    if len(encoded) > MAX_NAME_BYTES:
        stem, dot, ext = name.rpartition(".")
        keep_ext = dot and 0 < len(ext.encode()) <= 16
        suffix = f".{ext}" if keep_ext else ""
        budget = MAX_NAME_BYTES - len(suffix.encode())
        base = (stem if keep_ext else name).encode("utf-8")[:budget].decode("utf-8", "ignore")
        name = base + suffix
    return name


# Downloads of one file repeat the same header: computed once per (type, name).
@functools.lru_cache(maxsize=1024)
def content_disposition(mime: str, name: str) -> str:
    """``inline`` only for types safe to render; RFC 6266 ``filename*`` for non-ASCII names."""
    disposition = (
        "inline" if mime in INLINE_SAFE or mime.startswith(("audio/", "video/")) else "attachment"
    )
    name = safe_name(name)
    ascii_name = name.encode("ascii", "replace").decode("ascii").replace("?", "_")
    quoted = urllib.parse.quote(name, safe="")
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{quoted}"


def content_type(mime: str) -> str:
    return "text/plain; charset=utf-8" if mime == "text/plain" else mime

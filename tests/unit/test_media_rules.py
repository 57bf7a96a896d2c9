"""Pure rules of the media store: sniffing, names, ranges, ETags, signed URLs, tus headers,
the quota."""

from __future__ import annotations

import base64
import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media_store import http_rules, quota, tus
from media_store.meta import MediaMeta, from_hash, to_hash
from media_store.sniff import (
    Sniffed,
    content_disposition,
    denied,
    needs_tracks,
    safe_name,
    sniff,
    without_video,
)
from tests import media_files


@pytest.mark.parametrize(
    ("data", "mime", "kind"),
    [
        (media_files.jpeg((20, 20)), "image/jpeg", "image"),
        (media_files.png((20, 20)), "image/png", "image"),
        (media_files.wav(0.1), "audio/x-wav", "audio"),
        (media_files.pdf(), "application/pdf", "document"),
        (media_files.exe(), "application/x-msdownload", "other"),
        (b"\x7fELF\x02\x01\x01" + b"\0" * 60, "application/x-executable", "other"),
        (b"\xcf\xfa\xed\xfe" + b"\0" * 60, "application/x-mach-binary", "other"),
        (b"#!/usr/bin/env python\nprint(1)\n", "application/x-shellscript", "other"),
        (b"plain notes \xc3\xa9\n", "text/plain", "document"),
        (b"<!DOCTYPE html><script>alert(1)</script>", "text/html", "other"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml", "other"),
        (b"\x00\x01\x02binary", "application/octet-stream", "other"),
        (b"", "application/octet-stream", "other"),
    ],
)
def test_sniff(data: bytes, mime: str, kind: str) -> None:
    found = sniff(data[:8192])
    assert (found.mime, found.kind) == (mime, kind)


def test_matroska_without_video_is_audio() -> None:
    assert needs_tracks("video/webm") and needs_tracks("video/x-matroska")
    assert not needs_tracks("video/mp4") and not needs_tracks("audio/ogg")
    assert without_video(Sniffed("video/webm", "video")) == Sniffed("audio/webm", "audio")
    assert without_video(Sniffed("video/x-matroska", "video")) == Sniffed(
        "audio/x-matroska", "audio"
    )
    assert without_video(Sniffed("video/mp4", "video")) == Sniffed("video/mp4", "video")


def test_text_cut_inside_a_character_is_still_text() -> None:
    assert sniff("é".encode() * 10 + b"\xc3").mime == "text/plain"


def test_deny_list() -> None:
    deny = ["application/x-msdownload", "video/*"]
    assert denied("application/x-msdownload", deny)
    assert denied("video/mp4", deny)
    assert not denied("audio/ogg", deny)


@pytest.mark.parametrize(
    ("given_name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\me\\evil.exe", "evil.exe"),
        ('a"b\r\nc.txt', "a_b_c.txt"),
        ("...", "file"),
        ("", "file"),
        (None, "file"),
        (".hidden", "hidden"),
        ("ok name (1).pdf", "ok name (1).pdf"),
    ],
)
def test_safe_name(given_name: str | None, safe: str) -> None:
    assert safe_name(given_name) == safe


@pytest.mark.parametrize(
    ("given_name", "safe"),
    [
        # Right-to-left override: shown as "reportexe.txt", really an .exe.
        ("report\u202etxt.exe", "reporttxt.exe"),
        ("a\u202ab\u202bc\u202cd\u202de.pdf", "abcde.pdf"),
        ("\u2066x\u2067y\u2068z\u2069.png", "xyz.png"),
        ("\u200ehe\u200fbrew\u061c.txt", "hebrew.txt"),
        ("zero\u200bwidth\u200c\u200djoin\ufeff.txt", "zerowidthjoin.txt"),
        ("\u202e\u2066", "file"),
        # C1 controls and line/paragraph separators are controls too.
        ("a\x85b\x9bc\u2028d\u2029e.txt", "a_b_c_d_e.txt"),
    ],
)
def test_safe_name_drops_format_characters(given_name: str, safe: str) -> None:
    assert safe_name(given_name) == safe


def test_long_names_keep_their_extension() -> None:
    name = safe_name("é" * 300 + ".jpeg")
    assert name.endswith(".jpeg")
    assert len(name.encode()) <= 200


@given(st.text(max_size=300))
def test_safe_name_never_has_a_path_or_control_character(name: str) -> None:
    safe = safe_name(name)
    assert safe and "/" not in safe and "\\" not in safe
    assert not any(ord(c) < 32 for c in safe)
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in safe)
    assert len(safe.encode()) <= 200
    header = content_disposition("application/octet-stream", name)
    assert "\r" not in header and "\n" not in header
    assert header.count('"') == 2


def test_content_disposition() -> None:
    assert content_disposition("text/html", "a.html").startswith("attachment;")
    assert content_disposition("image/svg+xml", "a.svg").startswith("attachment;")
    header = content_disposition("image/png", "naïve.png")
    assert header == "inline; filename=\"na_ve.png\"; filename*=UTF-8''na%C3%AFve.png"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=90-", (90, 100)),
        ("bytes=-10", (90, 100)),
        ("bytes=-1000", (0, 100)),
        ("bytes=95-200", (95, 100)),
        ("bytes=5-1", None),  # invalid: ignored
        ("bytes=0-1,5-6", None),  # several ranges: whole body
        ("items=0-1", None),
        ("bytes=a-b", None),
        ("bytes=-", None),
        # Digits that are not ASCII (str.isdigit() takes them, int() does not): ignored.
        ("bytes=\u00b2-", None),
        ("bytes=-\u00b2", None),
        ("bytes=0-\u00b2", None),
        ("bytes=\u0663-", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    got = http_rules.parse_range(header, 100)
    assert (None if got is None else (got.start, got.end)) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=-0", "bytes=500-600"])
def test_unsatisfiable_range(header: str) -> None:
    with pytest.raises(http_rules.Unsatisfiable):
        http_rules.parse_range(header, 100)


def test_etags() -> None:
    etag = http_rules.etag_for("ab" * 32)
    assert http_rules.none_match(etag, etag)
    assert http_rules.none_match(f'"x", W/{etag}', etag)
    assert http_rules.none_match("*", etag)
    assert not http_rules.none_match('"other"', etag)
    assert not http_rules.none_match(None, etag)


def test_signed_urls() -> None:
    key = http_rules.url_key("secret")
    sig = http_rules.sign(key, "id1", 1000)
    assert http_rules.signature_valid(key, "id1", "1000", sig, now=999)
    assert not http_rules.signature_valid(key, "id1", "1000", sig, now=1001)  # expired
    assert not http_rules.signature_valid(key, "id2", "1000", sig, now=999)  # other file
    assert not http_rules.signature_valid(key, "id1", "1001", sig, now=999)  # other expiry
    assert not http_rules.signature_valid(http_rules.url_key("other"), "id1", "1000", sig, 999)
    assert not http_rules.signature_valid(key, "id1", "-1", sig, now=0)
    assert not http_rules.signature_valid(key, "id1", "\u00b2", sig, now=0)
    assert not http_rules.signature_valid(key, "id1", "\u0661\u0660\u0660\u0660", sig, now=999)


def test_tus_metadata() -> None:
    header = tus.encode_metadata({"filename": "a b.txt", "type": "x"}) + ",flag"
    assert tus.parse_metadata(header) == {"filename": "a b.txt", "type": "x", "flag": ""}
    for bad in ("filename !!!", "a b c", "a Zg==,a Zg==", "k " + "A" * 5000):
        with pytest.raises(tus.TusError):
            tus.parse_metadata(bad)
    assert tus.parse_metadata("filename " + base64.b64encode(b"x").decode()) == {"filename": "x"}


def test_tus_checks() -> None:
    with pytest.raises(tus.TusError) as version:
        tus.check_version("0.2.2")
    assert version.value.status == 412
    created = tus.check_creation(length="10", defer=None, metadata=None, max_size=10)
    assert created.length == 10
    for length, defer in (("11", None), ("-1", None), (None, None), ("10", "1")):
        with pytest.raises(tus.TusError):
            tus.check_creation(length=length, defer=defer, metadata=None, max_size=10)
    ok = dict(content_type="application/offset+octet-stream", current=4, length=10)
    assert tus.check_patch(offset="4", content_length=6, **ok).room == 6  # type: ignore[arg-type]
    with pytest.raises(tus.TusError) as wrong:
        tus.check_patch(offset="3", content_length=1, **ok)  # type: ignore[arg-type]
    assert (wrong.value.status, wrong.value.code) == (409, "bad_offset")
    with pytest.raises(tus.TusError) as past:
        tus.check_patch(offset="4", content_length=7, **ok)  # type: ignore[arg-type]
    assert past.value.status == 413
    with pytest.raises(tus.TusError) as ctype:
        tus.check_patch(
            content_type="text/plain", offset="4", content_length=1, current=4, length=10
        )
    assert ctype.value.status == 415


def test_meta_round_trip() -> None:
    meta = MediaMeta(
        id="x" * 22,
        owner="alice",
        name="a.ogg",
        size=10,
        mime="audio/ogg",
        kind="audio",
        digest="ab" * 32,
        created=1.5,
        duration=2.25,
        voice="cd" * 32,
        waveform=[0, 128, 255],
        gps_stripped=True,
    )
    assert from_hash(to_hash(meta)) == meta
    assert meta.blobs() == ["ab" * 32, "cd" * 32]
    assert from_hash({"owner": "x"}) is None


def test_unfinished_uploads_count_by_their_declared_length() -> None:
    usage = quota.Usage(used=300, reserved=600, open_uploads=2)
    assert usage.total == 900
    rules = {"quota": 1000, "max_open": 3}
    assert quota.reservation_error(usage, 100, **rules) is None  # exactly the quota
    over = quota.reservation_error(usage, 101, **rules)
    assert over is not None and (over.status, over.code) == (413, "quota_exceeded")
    assert "900 of 1000" in over.message
    assert quota.reservation_error(usage, 10**12, quota=0, max_open=3) is None  # no quota


def test_open_uploads_are_capped_whatever_their_size() -> None:
    usage = quota.Usage(used=0, reserved=0, open_uploads=3)
    capped = quota.reservation_error(usage, 0, quota=0, max_open=3)
    assert capped is not None and (capped.status, capped.code) == (429, "too_many_uploads")
    # The cap is checked first: its answer is the one that helps (finish or cancel one).
    both = quota.reservation_error(usage, 10**9, quota=10, max_open=3)
    assert both is not None and both.code == "too_many_uploads"


def test_room_for_one_more_file() -> None:
    usage = quota.Usage(used=300, reserved=600, open_uploads=1)
    limit, error = quota.room(usage, quota=1000, max_upload=500)
    assert (limit, error.code) == (100, "quota_exceeded")
    limit, error = quota.room(usage, quota=10_000, max_upload=500)
    assert (limit, error.code) == (500, "too_large")
    full = quota.Usage(used=900, reserved=600, open_uploads=1)  # over: a lowered quota
    assert quota.room(full, quota=1000, max_upload=500)[0] == 0
    assert quota.room(full, quota=0, max_upload=500)[0] == 500

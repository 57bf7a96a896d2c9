"""Full-text search over chat messages: index terms, query terms, exact matching, snippets. Pure.

Text is folded first: NFKC, casefold, Latin-style diacritics dropped (full-width ``ABC`` ->
``abc``, ``Straße`` -> ``strasse``, ``café`` -> ``cafe``). Kana voicing marks are kept (``が`` is
not ``か``) and Hangul stays composed. Folding works on one base character plus
its marks at a time, so every folded character knows the original characters it came from.

Folded text splits into two kinds of token:

* a *word*: letters, digits and marks outside CJK, with apostrophes inside (``don't``). Its
  term is the word without apostrophes (``dont``); a word with apostrophes also yields each
  part (``l'homme`` -> ``lhomme``, ``l``, ``homme``).
* a *CJK run*: Han, kana and Hangul, which need no spaces between words. A run yields every
  character (unigram) and every overlapping pair (bigram): ``東京都`` -> ``東``, ``東京``, ``京``,
  ``京都``, ``都``.

Terms carry no kind prefix because kinds cannot collide: word terms contain no CJK
character, CJK terms contain nothing else, and unigrams and bigrams differ in length.

A query needs every one of its terms. Bigram AND admits false positives (``東京都`` matches
``東京 … 京都``), and long words are truncated into terms, so candidates from the index go
through :func:`matches`, which is exact.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterator

import msgspec

MAX_TERMS = 512  # per message; the tail of a longer message is not searchable
MAX_QUERY_TERMS = 16  # a subset of the terms still finds every match; matches() is exact
MAX_TERM_CHARS = 64  # longer words are indexed by their first characters
_SNAP = 12  # how far a snippet edge may move to land on whitespace
_ELLIPSIS = "…"

_CJK = re.compile(
    "[\u1100-\u11ff\u3005-\u3007\u3041-\u3096\u3099-\u309f\u30a1-\u30fa\u30fc-\u30ff"
    "\u3131-\u318e\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\ua960-\ua97f\uac00-\ud7af"
    "\ud7b0-\ud7ff\uf900-\ufaff\U00020000-\U0003134f]"
)
# Diacritics for Latin, Greek and Cyrillic, variation selectors and invisible format characters.
_DROP = re.compile(
    "[\u00ad\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u200b-\u200f\u2060-\u2064\u20d0-\u20ff"
    "\ufe00-\ufe0f\ufe20-\ufe2f\ufeff\U000e0100-\U000e01ef]"
)
_APOSTROPHES = frozenset("'\u2019\u02bc")


class Highlight(msgspec.Struct, frozen=True, kw_only=True):
    snippet: str  # a window of the original text; "…" where it was cut
    ranges: list[tuple[int, int]]  # [start, end) of each match in `snippet`, in code points


class _Folded:
    """Folded text; ``starts[i]:ends[i]`` is the original span of folded character ``i``.

    Each cluster (a character and the marks attached to it) is folded on its own."""

    __slots__ = ("ends", "starts", "text")

    def __init__(self, original: str) -> None:
        if original.isascii():  # the common case: folding is lower-casing, one to one
            self.text = original.lower()
            self.starts = list(range(len(original)))
            self.ends = list(range(1, len(original) + 1))
            return
        parts: list[str] = []
        self.starts = []
        self.ends = []
        cuts = [i for i in range(1, len(original)) if not _continues(original[i])]
        for start, end in zip([0, *cuts], [*cuts, len(original)], strict=True):
            folded = _fold(original[start:end])
            parts.append(folded)
            self.starts += [start] * len(folded)
            self.ends += [end] * len(folded)
        self.text = "".join(parts)

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        return self.starts[start], self.ends[end - 1]


@functools.lru_cache(maxsize=4096)
def _continues(ch: str) -> bool:
    """Whether ``ch`` attaches to the character before it (a mark, or a Hangul vowel/final)."""
    code = ord(ch)
    if code < 0x300:
        return False
    if 0x1160 <= code <= 0x11FF or 0xD7B0 <= code <= 0xD7FF:
        return True
    return unicodedata.category(unicodedata.normalize("NFKC", ch)[0])[0] == "M"


@functools.lru_cache(maxsize=4096)  # clusters are mostly single characters: few distinct ones
def _fold(cluster: str) -> str:
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", cluster).casefold())
    return unicodedata.normalize("NFKC", _DROP.sub("", decomposed))


@functools.lru_cache(maxsize=4096)
def _is_word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LNM" and ch not in _APOSTROPHES and not _CJK.match(ch)


def _is_word_start(ch: str) -> bool:
    return _is_word_char(ch) and unicodedata.category(ch)[0] != "M"


class _Token(msgspec.Struct, frozen=True):
    cjk: bool
    start: int
    end: int
    parts: tuple[tuple[int, int], ...] = ()  # a word's spans between apostrophes


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while i < n:
        if _CJK.match(text[i]):
            j = i + 1
            while j < n and _CJK.match(text[j]):
                j += 1
            tokens.append(_Token(True, i, j))
        elif _is_word_start(text[i]):
            parts: list[tuple[int, int]] = []
            part_start = j = i
            while j < n:
                if _is_word_char(text[j]):
                    j += 1
                elif text[j] in _APOSTROPHES and j + 1 < n and _is_word_start(text[j + 1]):
                    parts.append((part_start, j))
                    part_start = j = j + 1
                else:
                    break
            parts.append((part_start, j))
            tokens.append(_Token(False, i, j, tuple(parts)))
        else:
            j = i + 1
        i = j
    return tokens


def _word_forms(text: str, token: _Token) -> Iterator[tuple[str, int, int]]:
    """A word without apostrophes, then its parts if it had any, each with its span."""
    yield "".join(text[s:e] for s, e in token.parts), token.start, token.end
    if len(token.parts) > 1:
        for s, e in token.parts:
            yield text[s:e], s, e


def _query(query: str) -> dict[str, bool]:
    """A query's words (apostrophes removed) and CJK runs, folded; True for a CJK run."""
    text = _Folded(query).text
    return {
        text[t.start : t.end] if t.cjk else next(_word_forms(text, t))[0]: t.cjk
        for t in _tokens(text)
    }


# ASCII text folds by lower-casing, has no CJK and no marks: its words are runs of letters
# and digits, with apostrophes inside.
_ASCII_WORD = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*")


# Chinese written with ASCII: unified ideographs fold to themselves and are CJK runs; the
# common Chinese punctuation folds (NFKC) to ASCII punctuation or stays punctuation, and
# separates words either way (none of it is or becomes an apostrophe).
_IDEOGRAPHS = "\u3400-\u4dbf\u4e00-\u9fff"
_HAN_TEXT = re.compile(
    f"[\\x00-\\x7f{_IDEOGRAPHS}\u3001\u3002\u300c\u300d\u3010\u3011\u201c\u201d\u2026"
    "\uff01\uff08\uff09\uff0c\uff1a\uff1b\uff1f]*"
)
_HAN_TOKEN = re.compile(f"[{_IDEOGRAPHS}]+|[a-z0-9]+(?:'[a-z0-9]+)*")


def index_terms(text: str) -> list[str]:
    """The distinct terms to index a message under, in order of first appearance."""
    if text.isascii():
        return _ascii_index_terms(text.lower())
    if _HAN_TEXT.fullmatch(text):
        return _han_index_terms(text.lower())
    return _index_terms(text)


def _han_index_terms(folded: str) -> list[str]:
    """:func:`_index_terms` of ASCII text with Chinese ideographs and punctuation (most
    Chinese messages), several times faster. The tokens are found in one call (a run of
    ideographs begins with a character outside ASCII, a word with one inside)."""
    terms: dict[str, None] = {}
    for token in _HAN_TOKEN.findall(folded):
        if token[0] > "\x7f":
            for i in range(len(token)):
                terms[token[i]] = None
                terms[token[i : i + 2]] = None  # the last: its unigram again
        elif "'" in token:
            parts = token.split("'")
            terms["".join(parts)[:MAX_TERM_CHARS]] = None
            for part in parts:
                terms[part[:MAX_TERM_CHARS]] = None
        else:
            terms[token[:MAX_TERM_CHARS]] = None
        if len(terms) >= MAX_TERMS:
            break
    return list(terms)[:MAX_TERMS]


def _ascii_index_terms(folded: str) -> list[str]:
    """:func:`_index_terms` of ASCII text, a few times faster (every message is indexed):
    without apostrophes or overlong words (nearly every message), the words in one call and
    their distinct ones in another."""
    words = _ASCII_WORD.findall(folded)
    if "'" not in folded and (
        len(folded) <= MAX_TERM_CHARS or max(map(len, words), default=0) <= MAX_TERM_CHARS
    ):
        return list(dict.fromkeys(words))[:MAX_TERMS]
    terms: dict[str, None] = {}
    for word in words:
        if "'" in word:
            parts = word.split("'")
            terms["".join(parts)[:MAX_TERM_CHARS]] = None
            for part in parts:
                terms[part[:MAX_TERM_CHARS]] = None
        else:
            terms[word[:MAX_TERM_CHARS]] = None
        if len(terms) >= MAX_TERMS:
            break
    return list(terms)[:MAX_TERMS]


def _index_terms(text: str) -> list[str]:
    folded = _Folded(text).text
    terms: dict[str, None] = {}
    for token in _tokens(folded):
        if token.cjk:
            for i in range(token.start, token.end):
                terms[folded[i]] = None
                if i + 1 < token.end:
                    terms[folded[i : i + 2]] = None
        else:
            for form, _, _ in _word_forms(folded, token):
                terms[form[:MAX_TERM_CHARS]] = None
        if len(terms) >= MAX_TERMS:
            break
    return list(terms)[:MAX_TERMS]


def query_terms(query: str) -> list[str]:
    """Terms a message must all be indexed under to match; empty if nothing is searchable."""
    terms: dict[str, None] = {}
    for part, cjk in _query(query).items():
        if not cjk:
            terms[part[:MAX_TERM_CHARS]] = None
        elif len(part) == 1:
            terms[part] = None
        else:
            terms.update((part[i : i + 2], None) for i in range(len(part) - 1))
    return list(terms)[:MAX_QUERY_TERMS]


def matches(text: str, query: str) -> bool:
    """Whether every query word is a word of ``text`` and every CJK run of the query occurs in
    it. A query with nothing searchable matches nothing."""
    parts = _query(query)
    if not parts:
        return False
    folded = _Folded(text).text
    words = {form for t in _tokens(folded) if not t.cjk for form, _, _ in _word_forms(folded, t)}
    return all(p in folded if cjk else p in words for p, cjk in parts.items())


def _spans(folded: _Folded, query: str) -> list[tuple[int, int]]:
    """Original spans of every occurrence of a query word or CJK run, sorted."""
    parts = _query(query)
    found: list[tuple[int, int]] = []
    for token in _tokens(folded.text):
        if not token.cjk:
            for form, s, e in _word_forms(folded.text, token):
                if parts.get(form) is False:
                    found.append(folded.original_span(s, e))
    for run in (p for p, cjk in parts.items() if cjk):
        at = folded.text.find(run)
        while at >= 0:
            found.append(folded.original_span(at, at + len(run)))
            at = folded.text.find(run, at + len(run))
    return sorted(found)


def highlight(text: str, query: str, *, context: int = 40) -> Highlight:
    """A snippet of ``text`` around the first match of ``query`` and the matches within it.

    Without a match the snippet is the start of the text and ``ranges`` is empty.
    """
    spans = _spans(_Folded(text), query)
    first_start, first_end = spans[0] if spans else (0, 0)
    start, end = max(0, first_start - context), min(len(text), first_end + context)
    if not spans:
        end = min(len(text), 2 * context)
    if start > 0 and not text[start - 1].isspace():
        start = next(
            (i + 1 for i in range(start, min(first_start, start + _SNAP)) if text[i].isspace()),
            start,
        )
    if end < len(text) and not text[end].isspace():
        end = next(
            (i for i in range(end - 1, max(first_end, end - _SNAP) - 1, -1) if text[i].isspace()),
            end,
        )
    while start < first_start and (text[start].isspace() or _continues(text[start])):
        start += 1  # neither open on blank space nor on a mark cut from its letter
    while end > first_end and end < len(text) and _continues(text[end]):
        end -= 1
    while end > first_end and text[end - 1].isspace():
        end -= 1
    prefix = _ELLIPSIS if start > 0 else ""
    suffix = _ELLIPSIS if end < len(text) else ""
    ranges: list[tuple[int, int]] = []
    for s, e in spans:
        s, e = max(s, start), min(e, end)
        if s >= e:
            continue
        if ranges and s < ranges[-1][1]:
            ranges[-1] = (ranges[-1][0], max(ranges[-1][1], e))
        else:
            ranges.append((s, e))
    shift = len(prefix) - start
    return Highlight(
        snippet=prefix + text[start:end] + suffix,
        ranges=[(s + shift, e + shift) for s, e in ranges],
    )

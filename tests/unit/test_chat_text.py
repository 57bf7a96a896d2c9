"""chat.text: folding, index and query terms, exact matching and highlight offsets."""

from __future__ import annotations

import string
import unicodedata

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from chat import text as text_module
from chat.text import (
    MAX_QUERY_TERMS,
    MAX_TERM_CHARS,
    MAX_TERMS,
    Highlight,
    highlight,
    index_terms,
    matches,
    query_terms,
)


def wide(ascii_text: str) -> str:
    """The full-width form of printable ASCII (``wide("AB1")`` is U+FF21 U+FF22 U+FF11)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" for c in ascii_text)


RSQUO = "\u2019"  # the typographic apostrophe


def found(text: str, query: str) -> bool:
    """What a search does: the index lookup, then the exact post-filter."""
    terms = query_terms(query)
    return bool(terms) and set(terms) <= set(index_terms(text)) and matches(text, query)


def marked(h: Highlight) -> list[str]:
    return [h.snippet[s:e] for s, e in h.ranges]


def test_chinese() -> None:
    assert index_terms("我们明天开会") == [
        "我",
        "我们",
        "们",
        "们明",
        "明",
        "明天",
        "天",
        "天开",
        "开",
        "开会",
        "会",
    ]
    assert query_terms("开会") == ["开会"]
    assert query_terms("明天开会") == ["明天", "天开", "开会"]
    assert found("我们明天开会", "明天开会")
    assert not found("我们明天开会", "后天")


def test_japanese_kana_and_kanji() -> None:
    text = "東京タワーに行きました"
    assert {"東京", "京タ", "タワ", "ワー", "ーに", "に行", "行き"} <= set(index_terms(text))
    assert found(text, "東京タワー")
    assert found(text, "行きました")
    assert not found(text, "大阪")
    # Voicing marks are letters of their own: が is not か.
    assert not found("がっこう", "かっこう")


def test_half_width_katakana_folds_to_full_width() -> None:
    assert index_terms("ｶﾞｷﾞ") == ["ガ", "ガギ", "ギ"]  # a voiced mark joins its kana
    assert found("ﾃｽﾄです", "テスト")
    assert found("テストです", "ﾃｽﾄ")


def test_korean_hangul() -> None:
    text = "안녕하세요 여러분"
    assert "하세" in index_terms(text)
    assert "요여" not in index_terms(text)  # runs end at the space
    assert found(text, "안녕")
    assert found(text, "여러분")
    assert not found(text, "요여")
    # Decomposed Hangul (as in macOS file names) folds to syllables.
    assert found(unicodedata.normalize("NFD", "회의록.pdf"), "회의록")


def test_mixed_cjk_and_latin() -> None:
    assert index_terms("微信WeChat通话") == ["微", "微信", "信", "wechat", "通", "通话", "话"]
    assert index_terms("明天meeting改到3点") == [
        "明",
        "明天",
        "天",
        "meeting",
        "改",
        "改到",
        "到",
        "3",
        "点",
    ]
    assert query_terms("明天 Meeting 3点") == ["明天", "meeting", "3", "点"]
    assert found("明天meeting改到3点", "meeting 改到")
    assert found("明天meeting改到3点", "3点")
    assert not found("明天meeting改到3点", "meet")  # whole words only


def test_full_width_latin() -> None:
    assert index_terms(wide("ABC 123")) == ["abc", "123"]
    assert found(wide("ABC"), "abc")
    assert found("abc", wide("ABC"))


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("Café crème", "cafe creme"),
        ("cafe creme", "café CRÈME"),
        ("cafe\u0301", "café"),  # a combining accent, not a precomposed letter
        ("Straße", "STRASSE"),
        ("ΟΔΥΣΣΕΥΣ", "οδυσσευς"),  # final sigma
        ("Ἀθῆναι", "αθηναι"),
        ("ﬁle", "file"),
        ("naïve résumé", "Naive Resume"),
    ],
)
def test_folding_case_and_diacritics(text: str, query: str) -> None:
    assert found(text, query)


def test_apostrophes() -> None:
    assert index_terms(f"don't l{RSQUO}homme") == ["dont", "don", "t", "lhomme", "l", "homme"]
    assert query_terms("don't") == ["dont"]
    assert found("I don't know", "dont")
    assert found("I dont know", "don't")
    assert found(f"c'est l{RSQUO}homme", "homme")
    assert index_terms("'quoted' rock'n'roll") == ["quoted", "rocknroll", "rock", "n", "roll"]


@pytest.mark.parametrize("text", ["😀🎉", "👍🏽 ❤️ 👨‍👩‍👧", "!!! ... ???", "", " \t\n"])
def test_nothing_to_search(text: str) -> None:
    assert index_terms(text) == []
    assert query_terms(text) == []
    assert not matches("anything 😀🎉 at all", text)


def test_emoji_do_not_stick_to_words() -> None:
    assert index_terms("ok👍thanks 1️⃣") == ["ok", "thanks", "1"]


def test_single_cjk_character_query() -> None:
    assert query_terms("东") == ["东"]
    assert "东" in index_terms("去东京")
    assert found("去东京", "东")
    assert not found("去北京", "东")


def test_matches_removes_bigram_false_positives() -> None:
    text = "东京 和 京都"
    assert set(query_terms("东京都")) <= set(index_terms(text))  # the index says maybe
    assert not matches(text, "东京都")
    assert matches("我在东京都厅", "东京都")
    assert not matches("heat the meeting", "eat")  # words are whole


def test_term_kinds_cannot_collide() -> None:
    terms = index_terms("微信WeChat 通话 hello 世界 a1 東京都 안녕")
    cjk = {t for t in terms if all(unicodedata.name(c).startswith(("CJK", "HANGUL")) for c in t)}
    words = set(terms) - cjk
    assert cjk and words, terms  # both kinds are there to collide
    assert all(len(t) <= 2 for t in cjk)
    assert all(not unicodedata.name(c).startswith(("CJK", "HANGUL")) for t in words for c in t)


def test_limits() -> None:
    many = " ".join(f"w{i}" for i in range(2 * MAX_TERMS))
    assert index_terms(many) == [f"w{i}" for i in range(MAX_TERMS)]
    assert len(query_terms(many)) == MAX_QUERY_TERMS
    long_a, long_b = "a" * MAX_TERM_CHARS + "x", "a" * MAX_TERM_CHARS + "y"
    assert index_terms(long_a) == index_terms(long_b) == ["a" * MAX_TERM_CHARS]
    assert matches(long_a, long_a)
    assert not matches(long_a, long_b)  # the post-filter sees whole words


def test_highlight_short_text() -> None:
    text = f"the ﬁle is {wide('HERE')}"
    h = highlight(text, "file here")
    assert h == Highlight(snippet=text, ranges=[(4, 7), (11, 15)])
    assert marked(h) == ["ﬁle", wide("HERE")]


@pytest.mark.parametrize(
    ("text", "query", "expected"),
    [
        ("Die Straße ist lang", "strasse", ["Straße"]),
        ("cafe\u0301 au lait", "cafe", ["cafe\u0301"]),
        (f"ﬁﬁﬁ {wide('ABC')} 会议 ﬂ", "会议", ["会议"]),  # expansions before the match
        ("令和 ㍻ 元年", "平成", ["㍻"]),  # one original character, two folded ones
        ("ｶﾞｷﾞ テスト", "ギ", ["ｷﾞ"]),  # two original characters, one folded
        ("😀👨‍👩‍👧 hello", "hello", ["hello"]),
        ("东京都 and 東京都", "東京都", ["東京都"]),
        ("I don't know", "dont", ["don't"]),
        (f"c'est l{RSQUO}homme", "homme", ["homme"]),
    ],
)
def test_highlight_maps_back_to_original(text: str, query: str, expected: list[str]) -> None:
    assert marked(highlight(text, query)) == expected


def test_highlight_merges_overlaps_and_marks_every_occurrence() -> None:
    assert marked(highlight("東京都", "東京 京都")) == ["東京都"]
    assert marked(highlight("哈哈哈哈 ok", "哈哈")) == ["哈哈", "哈哈"]
    assert marked(highlight("Go go GO", "go")) == ["Go", "go", "GO"]


def test_highlight_cuts_a_long_text_around_the_first_match() -> None:
    text = "x " * 100 + "please move the 会议 to tomorrow, thanks" + " y" * 100
    h = highlight(text, "会议 tomorrow", context=20)
    assert h.snippet.startswith("…") and h.snippet.endswith("…")
    assert len(h.snippet) <= 2 * 20 + 2 + 2
    assert marked(h) == ["会议", "tomorrow"]
    assert h.snippet[1] != " " and h.snippet[-2] != " "
    assert "please move the 会议 to tomorrow, thanks" in h.snippet


def test_highlight_prefers_word_boundaries() -> None:
    text = "alpha bravo charlie delta echo foxtrot golf hotel india juliett"
    h = highlight(text, "echo", context=12)
    assert h.snippet == "…delta echo foxtrot…"
    assert marked(h) == ["echo"]


def test_highlight_without_a_match() -> None:
    assert highlight("short text", "absent") == Highlight(snippet="short text", ranges=[])
    h = highlight("word " * 40, "absent", context=10)
    assert h.ranges == []
    assert h.snippet == "word word word word…"


def test_highlight_does_not_split_a_letter_from_its_accent() -> None:
    text = "e\u0301" * 30 + " target " + "e\u0301" * 30
    h = highlight(text, "target", context=7)
    body = h.snippet.strip("…")
    assert unicodedata.category(body[0])[0] != "M"
    assert marked(h) == ["target"]


CJK = st.one_of(
    st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF),  # Han
    st.characters(min_codepoint=0x3041, max_codepoint=0x3096),  # Hiragana
    st.characters(min_codepoint=0x30A1, max_codepoint=0x30FA),  # Katakana
    st.characters(min_codepoint=0xFF66, max_codepoint=0xFF9D),  # half-width Katakana
    st.characters(min_codepoint=0xAC00, max_codepoint=0xD7A3),  # Hangul syllables
)
ANY = st.one_of(
    CJK, st.characters(), st.sampled_from("aZé ß'\uff21\uff42\uff11ﬁ㍻😀\u0301\uff9e\u2019")
)


def _attaches(ch: str) -> bool:
    """A combining character changes the one before it (か + ゙ = が)."""
    code = ord(ch)
    nfkc = unicodedata.normalize("NFKC", ch)
    return 0x1160 <= code <= 0x11FF or unicodedata.category(nfkc[0])[0] == "M"


@given(
    before=st.text(ANY, max_size=30),
    query=st.text(CJK, min_size=1, max_size=20),
    after=st.text(ANY, max_size=30),
)
def test_any_cjk_substring_is_found(before: str, query: str, after: str) -> None:
    assume(not after or not _attaches(after[0]))
    text = before + query + after
    assert set(query_terms(query)) <= set(index_terms(text))
    assert matches(text, query)
    h = highlight(text, query, context=10)
    assert h.ranges
    folded_query = unicodedata.normalize("NFKC", query)
    assert any(folded_query in unicodedata.normalize("NFKC", s) for s in marked(h))


@given(st.text(ANY, max_size=60))
def test_a_message_finds_itself(text: str) -> None:
    if not query_terms(text):
        assert index_terms(text) == []
        return
    assert found(text, text)


@given(st.text(ANY, max_size=80), st.text(ANY, max_size=10), st.integers(0, 30))
def test_highlight_ranges_are_sorted_disjoint_and_inside(text: str, query: str, ctx: int) -> None:
    h = highlight(text, query, context=ctx)
    body = h.snippet.removeprefix("…").removesuffix("…")
    assert body in text
    bounds = [x for r in h.ranges for x in r]
    assert bounds == sorted(bounds)
    assert all(s < e for s, e in h.ranges)
    if h.ranges:
        assert h.ranges[0][0] >= 0 and h.ranges[-1][1] <= len(h.snippet)


@given(st.text(alphabet=string.printable, max_size=300))
def test_ascii_terms_are_the_general_ones(text: str) -> None:
    assert text_module.index_terms(text) == text_module._index_terms(text)


def test_ascii_terms_edge_cases() -> None:
    for text in (
        "Don't STOP rock'n'roll 'quoted' trailing' ''double'' a'b'c 42nd x_y",
        "word " * 600,
        " ".join(f"w{i}" for i in range(600)),
        "a" * 100 + "'" + "b" * 100,
        "",
        "!!! ... '''",
    ):
        assert text_module.index_terms(text) == text_module._index_terms(text), text


HAN_ALPHABET = (
    string.printable
    + "我们明天开会东京都京都车站麒麟会议室㐀䶿一鿿"
    + "\u3001\u3002\u300c\u300d\u3010\u3011\u201c\u201d\u2026"
    + "\uff01\uff08\uff09\uff0c\uff1a\uff1b\uff1f"
    + RSQUO
    + "\uff07\u00e9\u3000"  # not in the quick path: the general one is taken
)


@given(st.text(alphabet=HAN_ALPHABET, max_size=300))
def test_chinese_and_ascii_terms_are_the_general_ones(text: str) -> None:
    assert text_module.index_terms(text) == text_module._index_terms(text)


def test_chinese_and_ascii_terms_edge_cases() -> None:
    for text in (
        "明天开会\uff0cDon't STOP\uff01「京都车站」…ok'明",
        "会议" * 400,
        "abc明天def",
        "x'明 明'x",
    ):
        assert text_module._HAN_TEXT.fullmatch(text)
        assert text_module.index_terms(text) == text_module._index_terms(text), text

"""Shared text processing: normalization, tokenization and BM25 index terms.

Query understanding and retrieval's BM25 index both go through this module, so a query and a
document are always normalized and tokenized the same way.

Three layers, each built on the previous one:

* `normalize` -- Unicode NFKC (full-width digits and currency signs become ASCII), case folding,
  control/format characters removed, whitespace collapsed. Punctuation is kept: `$ . , - ' %`
  matter for prices ("under $19.99") and the price extractor works on normalized text.
* `words` -- surface tokens, unstemmed: runs of letters/digits for alphabetic scripts (split on
  apostrophes, hyphens and any other punctuation) and jieba's words for runs of Han characters.
  Used for spelling correction and catalogue vocabulary.
* `index_terms` -- what BM25 indexes and matches, on both the query and the document side: latin
  words stemmed with the Snowball English stemmer and English stop words removed; Han runs
  segmented with jieba's search mode (which also emits the shorter words inside long ones).

Heavy resources (the jieba dictionary, about half a second to load, and the stemmers) are
created lazily on first use, never at import time. Everything here is deterministic and
thread-safe.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from typing import Any

from services.common.errors import InvalidArgument

__all__ = [
    "HAN",
    "HANGUL",
    "KANA",
    "STOP_WORDS",
    "contains_cjk",
    "facet_form",
    "index_terms",
    "is_latin_word",
    "normalize",
    "normalize_within",
    "stem",
    "word_spans",
    "words",
]

# Character-class fragments (for use inside `[...]`) of the East Asian scripts.
HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
KANA = "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f"
HANGUL = "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"

_CJK_RE = re.compile(f"[{HAN}{KANA}{HANGUL}]")

# Controls other than the ones str.split() already treats as whitespace become a space;
# invisible format characters (zero-width space/joiners, soft hyphen, bidi marks, BOM) and lone
# surrogates are removed.
_CONTROL_RE = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]")
_INVISIBLE_RE = re.compile(
    "[\u00ad\u034f\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f"
    "\ufe00-\ufe0f\ufeff\ufff9-\ufffb\ud800-\udfff]"
)

# A token is either a run of Han characters (segmented further by jieba) or a run of
# letters/digits of any other script (kana and hangul included: kana-only and hangul words are
# kept whole), optionally carrying combining diacritics. Underscore and all punctuation split.
_WORD_CHAR = f"[^\\W_{HAN}]"
_TOKEN_RE = re.compile(f"(?P<han>[{HAN}]+)|(?P<word>{_WORD_CHAR}(?:{_WORD_CHAR}|[\u0300-\u036f])*)")
_LATIN_WORD_RE = re.compile("[a-z\u00df-\u00f6\u00f8-\u00ff\u0100-\u024f]+")

# A small English stop-word list for BM25. Deliberately short: words that carry meaning in a
# shopping query ("not", "without", "men", "women", colours, sizes) are kept. "s" and "t" are
# what "men's" and "don't" leave behind once `words` splits on the apostrophe.
STOP_WORDS: frozenset[str] = frozenset(
    """
    a an the and or but nor for with without of in on to by from at into onto about as is are
    was were be been being am this that these those it its i me my we our you your he she
    him her his they them their there here what which who whom whose when where how why do
    does did doing have has had having will would shall should can could may might must
    so than too very just also only if then else such own same each any some all both few more
    most other under over above below up down out off again once s t
    """.split()
)

# A handful of Chinese function words that carry no search meaning on their own.
_CJK_STOP_WORDS: frozenset[str] = frozenset("的 了 和 与 及 或 吗 呢 吧 啊".split())

_jieba_lock = threading.Lock()
_jieba_module: Any = None
_stemmers = threading.local()


def normalize(text: str) -> str:
    """Canonical form of `text` for matching: NFKC, case-folded, whitespace collapsed, stripped.

    Full-width characters become their ASCII forms (`１００＄` -> `100$`), ligatures are
    expanded, invisible format characters are dropped and every run of whitespace or control
    characters becomes one space. Punctuation is kept. Idempotent.
    """
    text = _CONTROL_RE.sub(" ", text)
    text = _INVISIBLE_RE.sub("", text)
    text = unicodedata.normalize("NFKC", text)
    text = unicodedata.normalize("NFKC", text.casefold())
    return " ".join(text.split())


def normalize_within(text: str, limit: int, field: str) -> str:
    """`normalize(text)`, refused with InvalidArgument naming the caller's `field` when it is
    longer than `limit` characters. NFKC and case folding expand some characters (U+FDFA
    becomes 18, "ß" two), so a text within its raw limit can leave it; the raw limit, checked
    first by the caller, bounds the work (at most 18 characters out per character in)."""
    normalized = normalize(text)
    if len(normalized) > limit:
        raise InvalidArgument(
            field,
            f"must be at most {limit} characters once normalised (Unicode NFKC and case folding expand "
            f"some characters, e.g. U+FDFA to 18), got {len(normalized)}",
        )
    return normalized


def facet_form(text: str) -> str:
    """The form catalogue facet values (categories, brands, attributes) are compared in: case
    folded, runs of whitespace made one space. Lighter than `normalize`, since retrieval applies
    it to every attribute of every product it indexes."""
    return " ".join(text.casefold().split())


def contains_cjk(text: str) -> bool:
    """True when `text` has at least one Han, kana or hangul character."""
    return _CJK_RE.search(text) is not None


def is_latin_word(word: str) -> bool:
    """True when `word` is made only of (lower-case) latin letters, accented ones included."""
    return _LATIN_WORD_RE.fullmatch(word) is not None


def _jieba() -> Any:
    """The jieba module, initialised (dictionary loaded) once, on first use, with its log quiet."""
    global _jieba_module
    if _jieba_module is None:
        with _jieba_lock:
            if _jieba_module is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                jieba.initialize()
                _jieba_module = jieba
    return _jieba_module


def _stemmer() -> Any:
    """This thread's Snowball English stemmer (PyStemmer objects must not be shared by threads)."""
    stemmer = getattr(_stemmers, "english", None)
    if stemmer is None:
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
        _stemmers.english = stemmer
    return stemmer


def stem(word: str) -> str:
    """Snowball English stem of a latin word ("running" -> "run"); other words are unchanged."""
    return _stemmer().stemWord(word) if is_latin_word(word) else word


def word_spans(normalized: str) -> list[tuple[str, int, int]]:
    """`(word, start, end)` for each surface word of already-normalized text.

    `normalized[start:end] == word` always holds, so callers can splice replacements into the
    text (spelling correction does). Han runs are split into jieba's words.
    """
    spans: list[tuple[str, int, int]] = []
    for match in _TOKEN_RE.finditer(normalized):
        start = match.start()
        if match.lastgroup == "word":
            spans.append((match.group(), start, match.end()))
            continue
        run = match.group()
        pos = 0
        for token in _jieba().lcut(run):
            at = run.find(token, pos)
            if at < 0:  # jieba always partitions its input; be safe anyway
                continue
            pos = at + len(token)
            if token.strip():
                spans.append((token, start + at, start + pos))
    return spans


def words(text: str) -> list[str]:
    """Surface words of `text` (normalized first), unstemmed, in order.

    Latin/digit runs split on every non-word character ("men's" -> "men", "s";
    "t-shirt" -> "t", "shirt"); Han runs are segmented with `jieba.lcut`.
    """
    return [word for word, _, _ in word_spans(normalize(text))]


def index_terms(text: str) -> list[str]:
    """BM25 terms of `text`, identical for queries and documents. Deterministic.

    Latin words: English stop words dropped, the rest stemmed with Snowball English
    ("running" -> "run", "shoes" -> "shoe"). Words with digits or of other alphabetic scripts
    are kept as they are. Han runs: `jieba.lcut_for_search` tokens (a long word and the shorter
    words inside it), minus a few Chinese particles.
    """
    normalized = normalize(text)
    terms: list[str] = []
    for match in _TOKEN_RE.finditer(normalized):
        token = match.group()
        if match.lastgroup == "han":
            terms.extend(
                t for t in _jieba().lcut_for_search(token) if t.strip() and t not in _CJK_STOP_WORDS
            )
        elif token in STOP_WORDS:
            continue
        else:
            terms.append(stem(token))
    return terms

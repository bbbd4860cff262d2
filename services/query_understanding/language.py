"""Language of a search query.

Queries are short, so this is a two-stage decision:

1. Script first. Han characters with no kana/hangul -> "zh"; any kana -> "ja"; hangul -> "ko";
   Greek, Arabic, Hebrew, Thai and Devanagari -> "el", "ar", "he", "th", "hi". A script is an
   unambiguous signal, far better than a statistical model on three words (py3langid,
   restricted to European languages, calls Arabic text "tr" with 0.99999 confidence). The
   confidence is 0.5 + 0.5 x the script's share of the letters, so "iphone 手机" (mostly latin)
   is "zh" with less confidence than "西湖龙井". Japanese written only in kanji is reported as
   "zh": without kana the two cannot be told apart by script.
2. Otherwise py3langid, restricted to the languages shops here sell in (`SHOP_LANGUAGES`), with
   probabilities normalised over that set. For very short queries (at most
   `SHORT_QUERY_WORDS` words) langid is unreliable -- "shoes" and "iphone 15" come out as
   "en" with probability 0.26 and brand names look like anything -- so unless langid is very
   confident (> `SHORT_QUERY_MIN_CONFIDENCE`, as it is for "laufschuhe") the answer is the
   catalogue's default language, English, with a low confidence (`FALLBACK_CONFIDENCE`).
   Text with no letters at all ("12345", "$$$") is ("en", 0.0).
3. English shopping queries are often telegraphic and full of brand names, which confuses
   langid ("gift for dad under 30 dollars" comes out as Spanish, 0.92). So when langid picks
   another language without being near-certain (< `ENGLISH_OVERRIDE_MAX_CONFIDENCE`) but at
   least half of the words are common English words (`STOP_WORDS` and the spelling corrector's
   `COMMON_ENGLISH_WORDS`, or frequent words of `lexicon.english_words`), the answer is "en" with confidence 0.5 + 0.4 x that share.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from services.common.text import HAN, HANGUL, KANA, STOP_WORDS, normalize, words
from services.query_understanding.lexicon import english_words
from services.query_understanding.spelling import COMMON_ENGLISH_WORDS

__all__ = ["SHOP_LANGUAGES", "detect_language", "warm_up"]

SHOP_LANGUAGES: tuple[str, ...] = tuple("en de fr es it nl pt pl sv da no fi tr ru".split())
DEFAULT_LANGUAGE = "en"
SHORT_QUERY_WORDS = 2
SHORT_QUERY_MIN_CONFIDENCE = 0.95
FALLBACK_CONFIDENCE = 0.3
ENGLISH_OVERRIDE_MAX_CONFIDENCE = 0.99
ENGLISH_OVERRIDE_MIN_SHARE = 0.5
_ENGLISH_WORDS = STOP_WORDS | COMMON_ENGLISH_WORDS

_SCRIPTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("ja", re.compile(f"[{KANA}]")),
    ("ko", re.compile(f"[{HANGUL}]")),
    ("zh", re.compile(f"[{HAN}]")),
    ("el", re.compile("[\u0370-\u03ff\u1f00-\u1fff]")),
    ("ar", re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff]")),
    ("he", re.compile("[\u0590-\u05ff\ufb1d-\ufb4f]")),
    ("th", re.compile("[\u0e00-\u0e7f]")),
    ("hi", re.compile("[\u0900-\u097f]")),
)
# Kanji count towards Japanese once kana has shown the text is Japanese.
_JA_RE = re.compile(f"[{KANA}{HAN}]")

_identifier_lock = threading.Lock()
_identifier: Any = None


def _langid() -> Any:
    """The py3langid identifier restricted to `SHOP_LANGUAGES`, loaded once on first use."""
    global _identifier
    if _identifier is None:
        with _identifier_lock:
            if _identifier is None:
                from py3langid.langid import MODEL_FILE, LanguageIdentifier

                identifier = LanguageIdentifier.from_pickled_model(MODEL_FILE, norm_probs=True)
                identifier.set_languages(list(SHOP_LANGUAGES))
                _identifier = identifier
    return _identifier


def _clamp(value: float) -> float:
    return round(min(1.0, max(0.0, float(value))), 4)


def warm_up() -> None:
    """Load the langid model now rather than on the first query."""
    _langid()


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, confidence in [0, 1]) of `text`. See the module docstring."""
    text = normalize(text)
    letters = sum(1 for ch in text if ch.isalpha())
    if letters == 0:
        return DEFAULT_LANGUAGE, 0.0
    for code, pattern in _SCRIPTS:
        if pattern.search(text):
            script = _JA_RE if code == "ja" else pattern
            share = min(1.0, len(script.findall(text)) / letters)
            return code, _clamp(0.5 + 0.5 * share)
    language, probability = _langid().classify(text)
    language, probability = str(language), float(probability)
    alpha_words = [word for word in words(text) if any(ch.isalpha() for ch in word)]
    if len(alpha_words) <= SHORT_QUERY_WORDS and probability <= SHORT_QUERY_MIN_CONFIDENCE:
        return DEFAULT_LANGUAGE, FALLBACK_CONFIDENCE
    if language != "en" and probability < ENGLISH_OVERRIDE_MAX_CONFIDENCE and alpha_words:
        english = english_words()
        share = sum(1 for word in alpha_words if word in _ENGLISH_WORDS or word in english) / len(alpha_words)
        if share >= ENGLISH_OVERRIDE_MIN_SHARE:
            return "en", _clamp(0.5 + 0.4 * share)
    return language, _clamp(probability)

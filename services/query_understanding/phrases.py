"""Phrase matching for query understanding: finds the catalogue's known phrases (brands,
categories, attribute values) in normalized query text, longest first and without overlaps,
with the naive English singular and plural forms that let "shoes" match "shoe"."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from services.common.text import contains_cjk, is_latin_word, words


# "-ves" plurals are not regular ("gloves", "sleeves"), so the common irregular ones are listed.
_IRREGULAR_PLURALS = {
    "knives": "knife",
    "scarves": "scarf",
    "shelves": "shelf",
    "leaves": "leaf",
    "halves": "half",
    "wolves": "wolf",
    "loaves": "loaf",
    "children": "child",
    "feet": "foot",
    "teeth": "tooth",
    "mice": "mouse",
}


def singular(word: str) -> str:
    """A naive English singular of a latin word ("shoes" -> "shoe", "berries" -> "berry").

    Good enough for category names; returns `word` unchanged when it does not look plural.
    """
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if not is_latin_word(word) or len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


# A number glued to its unit ("500ml", "100g", "65w") and the same written apart ("500 ml") are
# one value: catalogues spell it both ways (this one has "500ml" and "500 ml"), and so do
# shoppers. Phrases and query words are therefore compared split at digit/letter boundaries.
_DIGIT_RUNS_RE = re.compile(r"\d+|[^\d]+")


def _split_digit_runs(token: str) -> list[str]:
    if not any(ch.isdigit() for ch in token) or token.isdigit():
        return [token]
    return _DIGIT_RUNS_RE.findall(token)


def _match_spans(spans: Sequence[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """`word_spans` with every word split at digit/letter boundaries, offsets kept exact."""
    split: list[tuple[str, int, int]] = []
    for word, start, end in spans:
        if not any(ch.isdigit() for ch in word) or word.isdigit():
            split.append((word, start, end))
            continue
        for run in _DIGIT_RUNS_RE.finditer(word):
            split.append((run.group(), start + run.start(), start + run.end()))
    return split


def plural(word: str) -> str | None:
    """A naive English plural of a latin word ("cat" -> "cats", "berry" -> "berries"), or None
    when the word already ends in "s" or is not a latin word. Also the apostrophe-less
    possessive shoppers type: "men" -> "mens", "women" -> "womens"."""
    if not is_latin_word(word) or word.endswith("s") or len(word) < 2:
        return None
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith(("x", "z", "ch", "sh")):
        return word + "es"
    return word + "s"


class PhraseMatch(NamedTuple):
    """One phrase found in a text: its normalized key and where it lies in the text."""

    key: str
    start: int
    end: int


class PhraseMatcher:
    """Finds known phrases in normalized text, longest first, without overlaps.

    Phrases with Han/kana/hangul characters match as substrings (Chinese has no spaces and
    segmentation may differ between catalogue and query); all others match as whole-word
    sequences of `words`, so "red" never matches inside "redmi" and "h&m" matches "h & m".
    Words are compared split at digit/letter boundaries, so "500ml" matches "500 ml".

    A match reports the phrase itself as its key; `aliases` (other spelling -> phrase) adds
    spellings reported as the phrase they stand for. Phrases with equal tokens ("500ml" and
    "500 ml") report the one spelled as in the text, else the earliest entry (phrases before
    aliases): filters carry catalogue spellings, and ranking compares them exactly.
    """

    def __init__(self, phrases: Iterable[str], aliases: Mapping[str, str] | None = None) -> None:
        entries = [(phrase, phrase) for phrase in phrases] + list((aliases or {}).items())
        # tokens -> {phrase as written -> key}, first entry first
        self._by_tokens: dict[tuple[str, ...], dict[str, str]] = {}
        cjk: dict[str, str] = {}
        for phrase, key in entries:
            if not phrase:
                continue
            if contains_cjk(phrase):
                cjk.setdefault(phrase, key)
                continue
            tokens = tuple(run for word in words(phrase) for run in _split_digit_runs(word))
            if tokens:
                self._by_tokens.setdefault(tokens, {}).setdefault(phrase, key)
        self._max_tokens = max((len(t) for t in self._by_tokens), default=0)
        self._cjk = sorted(cjk.items(), key=lambda item: (-len(item[0]), item[0]))

    def __len__(self) -> int:
        return len(self._by_tokens) + len(self._cjk)

    def find(
        self,
        text: str,
        spans: Sequence[tuple[str, int, int]],
        taken: bytearray | None = None,
    ) -> list[PhraseMatch]:
        """Non-overlapping matches in `text`, longest (in characters) first, then leftmost.

        `spans` are `services.common.text.word_spans(text)`. `taken` marks characters already
        claimed by earlier matches (of this or another matcher); the matches found here are
        marked in it too.
        """
        if taken is None:
            taken = bytearray(len(text))
        spans = _match_spans(spans)
        candidates: list[PhraseMatch] = []
        for i in range(len(spans)):
            for n in range(1, min(self._max_tokens, len(spans) - i) + 1):
                keys = self._by_tokens.get(tuple(word for word, _, _ in spans[i : i + n]))
                if keys is not None:
                    start, end = spans[i][1], spans[i + n - 1][2]
                    key = keys.get(text[start:end]) or next(iter(keys.values()))
                    candidates.append(PhraseMatch(key, start, end))
        if self._cjk and contains_cjk(text):
            for phrase, key in self._cjk:
                at = text.find(phrase)
                while at >= 0:
                    candidates.append(PhraseMatch(key, at, at + len(phrase)))
                    at = text.find(phrase, at + 1)
        candidates.sort(key=lambda m: (m.start - m.end, m.start, m.key))
        found: list[PhraseMatch] = []
        for match in candidates:
            if any(taken[match.start : match.end]):
                continue
            taken[match.start : match.end] = b"\x01" * (match.end - match.start)
            found.append(match)
        return found

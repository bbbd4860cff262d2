"""Autocomplete: an immutable index of what a shopper may be typing, and its look-up.

What can be suggested (`Candidate`): words and short phrases of the catalogue (the first one
to `MAX_TITLE_WORDS` words of each title, also after its brand, brands and categories: `catalogue_candidates`) and
queries shoppers searched and then clicked a result of (`query_candidates`; which queries
qualify, at least k distinct shoppers, is decided by the SQL that reads them, in
`suggestion_source.py`). Texts are compared `normalize`d, so one text from several sources is
one suggestion (the best scoring source names it).

Look-up (`SuggestionIndex.suggest`): the normalized prefix completes a text at its start or at
the start of any later word ("mac" completes "apple macbook"; a Chinese prefix completes
Chinese text character by character, and at jieba's word starts). Score = source weight x
log(1 + count) (count: clicked searches for a query, products for a catalogue text), times
`inner_word_factor` when the prefix matched a later word (`Ranking`; by default logged queries
first, then catalogue texts, and within each what the prefix starts before later-word matches). When fewer than `limit` texts match as
typed, prefixes of at least `min_typo_chars` characters are tried with one edit (deletion,
substitution, insertion or transposition of a latin letter, digit or space); those suggestions
are marked corrected and always rank below the ones matched as typed. No pinyin.

Speed: every suffix of a text that starts a word is one key of one sorted list; a prefix is a
range of it (two bisections), and the best texts of a long range come from a numpy partial sort
of the keys' precomputed scores, so a look-up does no work proportional to the catalogue.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from services.common.text import STOP_WORDS, contains_cjk, normalize, word_spans

# Leading words of a title that make suggestions ("apple", "apple macbook", "apple macbook pro").
MAX_TITLE_WORDS = 3
# Longer texts are not suggestions (a query pasted from somewhere, a description-like title).
MAX_SUGGESTION_CHARS = 100
# Above every character a key can hold: the end of a prefix's range in the sorted keys.
_AFTER_ALL = chr(0x10FFFF)
# What a weight or factor of 0 multiplies by: far below any ratio of two scores (log-counts),
# so those texts come after all the others and keep their own order.
LAST = 1e-6
# Characters a typo edit may insert or substitute: the most frequent non-CJK characters of the
# keys. Bounded, so a prefix costs at most ~(2 x this + 2) x its length bisections.
MAX_EDIT_ALPHABET = 48


class Source(IntEnum):
    """Where a suggestion comes from; the values are the proto's SuggestionSource numbers."""

    QUERY = 1
    TITLE = 2
    BRAND = 3
    CATEGORY = 4


@dataclass(frozen=True)
class Candidate:
    """A text that may be suggested, as shown, with how often it was seen (clicked searches of a
    query; products of a catalogue phrase, brand or category)."""

    text: str
    source: Source
    count: float


@dataclass(frozen=True)
class Suggestion:
    text: str
    source: Source
    score: float
    corrected: bool = False


@dataclass(frozen=True)
class Ranking:
    """How suggestions are ordered. A weight or factor of 0 does not drop those texts: it puts
    them after all the others (in their own order), to fill what is left of the limit. The
    defaults were chosen on the dev half of the Best Buy query log (`shelfwise eval suggest`,
    figures in services/query_understanding/README.md): queries shoppers typed rank above every
    catalogue text, and texts a prefix starts above those it matches at a later word."""

    # Catalogue texts against logged queries (weight 1).
    catalogue_weight: float = 0.0
    # A prefix that matched a later word ("mac" in "apple macbook") against one matching the start.
    inner_word_factor: float = 0.0
    # Shorter prefixes are not corrected: one edit on one or two letters matches almost anything.
    min_typo_chars: int = 3


def catalogue_candidates(products: Iterable[Mapping[str, Any]]) -> list[Candidate]:
    """Title phrases, brands and categories of product mappings (`title`, `brand`, `category`;
    missing or None is fine), each counted once per product that has it."""
    titles: Counter[str] = Counter()
    brands: dict[str, Counter[str]] = defaultdict(Counter)
    categories: dict[str, Counter[str]] = defaultdict(Counter)
    for product in products:
        title = normalize(product.get("title") or "")
        phrases = set(title_phrases(title))
        # "Apple MacBook Pro 14": shoppers type "macbook pro" as often as "apple macbook".
        brand = normalize(product.get("brand") or "")
        if brand and title.startswith(brand + " "):
            phrases.update(title_phrases(title[len(brand) + 1 :]))
        titles.update(phrases)
        for field, spellings in (("brand", brands), ("category", categories)):
            value = (product.get(field) or "").strip()
            if value and normalize(value):
                spellings[normalize(value)][value] += 1
    out = []
    for source, spellings in ((Source.BRAND, brands), (Source.CATEGORY, categories)):
        # Shown as the catalogue spells it most often ("Running Shoes", not "running shoes").
        out += [Candidate(s.most_common(1)[0][0], source, s.total()) for s in spellings.values()]
    # After the brands: a title's first word that is its brand, equally often, stays a brand.
    return out + [Candidate(text, Source.TITLE, count) for text, count in titles.items()]


def title_phrases(title: str) -> list[str]:
    """The leading 1..MAX_TITLE_WORDS words of a title (or the rest of it after the brand),
    normalized, as typed in a search box:
    cut after a word, never ending on a stop word or a bare number ("apple macbook", not
    "apple macbook with" or "apple macbook 13")."""
    text = normalize(title)
    phrases = []
    for count, (word, _, end) in enumerate(word_spans(text)[:MAX_TITLE_WORDS], start=1):
        if word in STOP_WORDS or word.isdigit():
            continue
        phrase = text[:end]
        if count > 1 or len(word) > 1 or contains_cjk(word):
            phrases.append(phrase)
    return phrases


def query_candidates(rows: Iterable[tuple[str, float]]) -> list[Candidate]:
    """Logged queries (text, clicked searches), already limited to those enough shoppers typed."""
    return [Candidate(query, Source.QUERY, count) for query, count in rows]


def _word_starts(text: str) -> list[int]:
    """Where a prefix may match in `text`: its start, after each space, and at each Chinese word
    (jieba) inside a Han run; not inside "men's" or "t-shirt", which nobody types from the middle."""
    starts = [0]
    for word, start, _ in word_spans(text):
        if start and (text[start - 1] == " " or contains_cjk(word)):
            starts.append(start)
    return starts


class SuggestionIndex:
    """Immutable after construction; safe to share between threads and requests."""

    def __init__(self, candidates: Iterable[Candidate], ranking: Ranking = Ranking(), version: str = ""):
        self.ranking = ranking
        self.version = version
        weights = {Source.QUERY: 1.0}
        catalogue_weight = ranking.catalogue_weight or LAST
        inner_word_factor = ranking.inner_word_factor or LAST
        best: dict[str, tuple[float, Candidate]] = {}
        for candidate in candidates:
            key = normalize(candidate.text)
            if not key or len(key) > MAX_SUGGESTION_CHARS or candidate.count <= 0:
                continue
            score = weights.get(candidate.source, catalogue_weight) * math.log1p(candidate.count)
            if score > 0 and (key not in best or score > best[key][0]):
                best[key] = (score, candidate)
        self._texts = [candidate.text for _, candidate in best.values()]
        self._sources = [candidate.source for _, candidate in best.values()]
        keyed = []
        for entry, (key, (score, _)) in enumerate(best.items()):
            for start in _word_starts(key):
                keyed.append((key[start:], score * (1.0 if start == 0 else inner_word_factor), entry))
        keyed.sort()
        self._keys = [key for key, _, _ in keyed]
        self._scores = np.array([score for _, score, _ in keyed], dtype=np.float64)
        self._entries = np.array([entry for _, _, entry in keyed], dtype=np.int64)
        alphabet = Counter(ch for key in self._keys for ch in key if not contains_cjk(ch) and ch.isprintable())
        self._alphabet = "".join(ch for ch, _ in alphabet.most_common(MAX_EDIT_ALPHABET))

    def __len__(self) -> int:
        """How many distinct texts can be suggested."""
        return len(self._texts)

    @classmethod
    def empty(cls) -> SuggestionIndex:
        return cls(())

    def suggest(self, prefix: str, limit: int) -> list[Suggestion]:
        """The best `limit` completions of `prefix` (raw text as typed), best first: those that
        match as typed, then (only if they are fewer than `limit`) corrected ones."""
        typed = normalize(prefix)
        if not typed:
            return []
        if prefix[-1:].isspace():
            typed += " "  # "apple " asks for the next word, not for "applesauce"
        exact = self._best({typed}, limit, exclude=set())
        found = [Suggestion(self._texts[e], self._sources[e], s) for e, s in exact]
        if len(found) >= limit or len(typed.strip()) < self.ranking.min_typo_chars or contains_cjk(typed):
            return found
        corrected = self._best(self._edits(typed), limit - len(found), exclude={e for e, _ in exact})
        if corrected:
            # Scaled under the last exact one: the order above holds, and scores stay comparable.
            scale = min(1.0, 0.5 * found[-1].score / corrected[0][1]) if found else 1.0
            found += [Suggestion(self._texts[e], self._sources[e], s * scale, corrected=True) for e, s in corrected]
        return found

    def _range(self, prefix: str) -> tuple[int, int]:
        return bisect_left(self._keys, prefix), bisect_left(self._keys, prefix + _AFTER_ALL)

    def _best(self, prefixes: Iterable[str], limit: int, exclude: set[int]) -> list[tuple[int, float]]:
        """(entry, score) of the best `limit` texts matching any of `prefixes`, best first; an
        entry matched by several keys keeps its best score."""
        scores: dict[int, float] = {}
        for prefix in prefixes:
            lo, hi = self._range(prefix)
            if lo == hi:
                continue
            # An entry can hold several keys in one range ("so" in "sony sound bar"): take more
            # than `limit` keys, and more again when the duplicates and exclusions ate them.
            take = limit + len(exclude) + 4
            while True:
                positions = self._top(lo, hi, take)
                fresh = {int(self._entries[p]) for p in positions} - exclude
                if len(fresh) >= limit or take >= hi - lo:
                    break
                take *= 4
            for position in positions:
                entry = int(self._entries[position])
                if entry not in exclude:
                    score = float(self._scores[position])
                    if score > scores.get(entry, 0.0):
                        scores[entry] = score
        # Ties broken by text, so a look-up is deterministic.
        return sorted(scores.items(), key=lambda item: (-item[1], self._texts[item[0]]))[:limit]

    def _top(self, lo: int, hi: int, take: int) -> np.ndarray:
        """Positions of the `take` best-scored keys in [lo, hi); among equal scores the first
        keys (in text order), so that a look-up is deterministic."""
        if hi - lo <= take:
            return np.arange(lo, hi)
        scores = self._scores[lo:hi]
        threshold = np.partition(scores, len(scores) - take)[len(scores) - take]
        above = np.flatnonzero(scores > threshold)
        tied = np.flatnonzero(scores == threshold)[: take - len(above)]
        return lo + np.concatenate([above, tied])

    def _edits(self, typed: str) -> set[str]:
        """Every text one edit from `typed` (Damerau: deletion, transposition, substitution,
        insertion) over the index's alphabet, `typed` itself excluded."""
        variants = set()
        for i in range(len(typed) + 1):
            head, tail = typed[:i], typed[i:]
            if tail:
                variants.add(head + tail[1:])
                if len(tail) > 1:
                    variants.add(head + tail[1] + tail[0] + tail[2:])
            for ch in self._alphabet:
                variants.add(head + ch + tail)
                if tail:
                    variants.add(head + ch + tail[1:])
        variants.discard(typed)
        # A variant that starts with a space, or is all spaces, completes nothing sensible.
        return {v for v in variants if v.strip() and not v.startswith(" ")}

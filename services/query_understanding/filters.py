"""Filters hidden in a query: a price range (read by price_phrases.py), brands, categories and
attribute values.

All functions take *normalized* text (`services.common.text.normalize`: lower-case, NFKC).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from services.common.text import word_spans
from services.query_understanding.price_phrases import PriceFilter, price_span
from services.query_understanding.vocabulary import CatalogVocabulary

# Scores of category matches (see `extract_filters`).
CATEGORY_FULL_MATCH_SCORE = 1.0
CATEGORY_HEAD_MATCH_SCORE = 0.6
MAX_HEAD_MATCH_CATEGORIES = 5


@dataclass(frozen=True)
class ExtractedFilters:
    """What `extract_filters` found.

    price: the price bound/range, or None.
    brands: canonical brand names, longest match first.
    categories: (canonical category, score) pairs, best first; score 1.0 for the full category
        name, 0.6 when only its head word matched ("shoes" for "Running Shoes").
    attributes: attribute name -> canonical value ("color" -> "Red").
    remaining_text: the query minus the price phrase. Brand, category and attribute words stay:
        they still help lexical matching.
    """

    price: PriceFilter | None
    brands: list[str] = field(default_factory=list)
    categories: list[tuple[str, float]] = field(default_factory=list)
    attributes: Mapping[str, str] = field(default_factory=dict)
    remaining_text: str = ""


# --- brands, categories, attributes ----------------------------------------------------------


def _remove(text: str, start: int, end: int) -> str:
    return " ".join((text[:start] + " " + text[end:]).split())


def _attribute_reading(
    vocabulary: CatalogVocabulary, key: str, categories: Mapping[str, float]
) -> tuple[str, str]:
    """(attribute, value) that a value means in this query.

    "black" is a colour in most of a catalogue but a tea type in "black tea"; "medium" a size
    but a roast in "medium roast coffee". When the query names categories, the attribute whose
    products in those categories carry the value most often wins (ties: the attribute carried
    by more products overall); otherwise the catalogue-wide default.
    """
    default = vocabulary.attribute_values[key]
    candidates = vocabulary.attribute_candidates.get(key, ())
    if not categories or len(candidates) < 2:
        return default
    best, best_count = default, 0
    for name, value, in_categories in candidates:
        count = sum(n for category, n in in_categories if category in categories)
        if count > best_count:
            best, best_count = (name, value), count
    return best


def extract_filters(normalized: str, vocabulary: CatalogVocabulary) -> ExtractedFilters:
    """Price, brands, categories and attribute values mentioned in normalized query text.

    The price phrase is removed first (giving `remaining_text`); the rest is matched against
    the vocabulary in `remaining_text`, each part of the query used once, in this order:

    * brands: whole-word phrases (substrings for Chinese), longest first;
    * categories: the full category name, or its singular form ("running shoe"), scores 1.0;
      then a remaining word that is the head (last) word of multi-word categories ("shoes" of
      "Running Shoes", "Dress Shoes") scores 0.6 for each of them (at most 5, alphabetical);
    * attributes: known attribute values as whole words ("red" -> color=Red), or their plural
      ("cats" -> animal=cat); a value several attributes share is read in the context of the
      categories found ("black tea" -> type=black, not color=black); when several values of
      one attribute appear, the first in the query wins.

    So "red wine" with a category "Red Wine" is that category, not colour red + "wine".
    """
    found = price_span(normalized)
    price = None
    remaining = normalized
    if found is not None:
        price, start, end = found
        remaining = _remove(normalized, start, end)

    spans = word_spans(remaining)
    taken = bytearray(len(remaining))

    brands: list[str] = []
    for match in vocabulary.brand_matcher.find(remaining, spans, taken):
        brand = vocabulary.brands[match.key]
        if brand not in brands:
            brands.append(brand)

    categories: dict[str, float] = {}
    for match in vocabulary.category_matcher.find(remaining, spans, taken):
        categories.setdefault(vocabulary.categories[match.key], CATEGORY_FULL_MATCH_SCORE)
    heads = vocabulary.category_heads
    if heads:
        for word, start, end in spans:
            names = heads.get(word)
            if not names or any(taken[start:end]):
                continue
            for name in names[:MAX_HEAD_MATCH_CATEGORIES]:
                categories.setdefault(name, CATEGORY_HEAD_MATCH_SCORE)
            taken[start:end] = b"\x01" * (end - start)

    attributes: dict[str, str] = {}
    matches = vocabulary.attribute_matcher.find(remaining, spans, taken)
    for match in sorted(matches, key=lambda m: m.start):
        name, value = _attribute_reading(vocabulary, match.key, categories)
        attributes.setdefault(name, value)

    return ExtractedFilters(
        price=price,
        brands=brands,
        categories=sorted(categories.items(), key=lambda kv: -kv[1]),
        attributes=MappingProxyType(attributes),
        remaining_text=remaining,
    )

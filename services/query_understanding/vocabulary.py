"""The catalogue's vocabulary: the words, brands, categories and attribute values that exist.

Query understanding only knows what the catalogue tells it: spelling correction suggests words
that occur in products, and filter extraction recognises brands, categories and attribute values
that products actually carry. `CatalogVocabulary.from_products` builds all of it in one pass over
the products; the result is immutable and safe to share between threads.

Everything is keyed by `services.common.text.normalize`d text and maps back to the canonical
spelling used in the catalogue, which is what filters must be expressed in.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from types import MappingProxyType
from typing import Any

from services.common.text import STOP_WORDS, contains_cjk, is_latin_word, normalize, words
from services.query_understanding.phrases import PhraseMatcher, plural, singular

# Weight of a title word in `word_counts`: titles are short and carefully written, descriptions
# long and noisy, so a title occurrence counts three times.
TITLE_WEIGHT = 3

# An attribute's values are recognised in queries only when the attribute is shared by at least
# this many products and this share of the catalogue ("color" on most products: yes; a one-off
# "engraving" attribute: no) ...
MIN_ATTRIBUTE_PRODUCTS = 2
MIN_ATTRIBUTE_SHARE = 0.02
# ... and when it looks like a small closed set (colour, material, size) rather than free text or
# an identifier: at most this many distinct values, or half its product count if that is more.
MAX_ATTRIBUTE_DISTINCT_VALUES = 50
# Values longer than this many words are descriptions, not filterable values.
MAX_ATTRIBUTE_VALUE_WORDS = 3

# Values that say nothing about the product and would match ordinary query words.
_GENERIC_VALUES = frozenset(
    "yes no true false none null n/a na nil other others unknown various misc default standard "
    "regular normal generic assorted".split()
)
# Numbers, number ranges and fractions ("42", "10.5", "42-44", "1/2", "100%").
_NUMERIC_VALUE_RE = re.compile(r"[\d\s.,/\-+x×%]+")
_PATH_SEPARATORS_RE = re.compile(r"\s*(?:>|/|\|)\s*")
# "Laptops & Tablets", "Bath and Body", "Tops, Tees": a compound category is the union of its
# parts, and a shopper names one part ("laptop under $1000").
_COMPOUND_SEPARATORS_RE = re.compile(r"\s*(?:&|,|\+)\s*|\s+and\s+")
# "men's" typed without its apostrophe: "mens clothing".
_POSSESSIVE_RE = re.compile(r"(\w)['’]s\b")


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _category_keys(name: str) -> set[str]:
    """Normalized forms under which a category is recognised.

    The full name; its leaf when it is a path ("Shoes > Running Shoes"); and for each of those
    the form with a singular last word ("running shoes" -> "running shoe").
    """
    full = normalize(name)
    keys = {full}
    leaf = _PATH_SEPARATORS_RE.split(full)[-1]
    if leaf:
        keys.add(leaf)
    for key in list(keys):
        keys.add(_POSSESSIVE_RE.sub(r"\1s", key))
    for key in list(keys):
        head = key.rsplit(" ", 1)
        head[-1] = singular(head[-1])
        keys.add(" ".join(head))
    return {key for key in keys if key}


def _category_part_keys(name: str) -> set[str]:
    """Keys of the parts of a compound category name ("laptops", "laptop", "tablets", "tablet"
    for "Laptops & Tablets"); empty for a simple name."""
    leaf = _PATH_SEPARATORS_RE.split(normalize(name))[-1]
    parts = [part for part in _COMPOUND_SEPARATORS_RE.split(leaf) if part]
    if len(parts) < 2:
        return set()
    return {key for part in parts for key in _category_keys(part)}


def _is_filterable_value(key: str) -> bool:
    if len(key) < 2 or key in _GENERIC_VALUES or key in STOP_WORDS:
        return False
    if _NUMERIC_VALUE_RE.fullmatch(key):
        return False
    tokens = words(key)
    return 1 <= len(tokens) <= MAX_ATTRIBUTE_VALUE_WORDS and not all(t.isdigit() for t in tokens)


def _most_common_first_seen(counter: Counter[str]) -> str:
    """The most frequent spelling; among equals the first seen (Counter keeps insertion order)."""
    best = max(counter.values())
    return next(spelling for spelling, count in counter.items() if count == best)


@dataclass(frozen=True)
class CatalogVocabulary:
    """What the catalogue contains, keyed by normalized text.

    word_counts: every surface word (`services.common.text.words`) of the catalogue with its
        weighted frequency (title words count `TITLE_WEIGHT` times; brand, category, attribute
        values and description once).
    brands: normalized brand -> brand as spelled in the catalogue.
    categories: normalized category name (and its singular/leaf variants) -> catalogue category.
    attribute_values: normalized value -> (attribute name, value as spelled in the catalogue),
        for short values of widely shared attributes only (see `from_products`).
    attribute_candidates: normalized value -> every (attribute name, value as spelled,
        ((category, products), ...)) that carries it, default (= `attribute_values`) first.
        A value such as "black" can be a colour or a tea type; the categories a query names
        decide which one it means (see `filters.extract_filters`). Optional: a vocabulary
        without it always uses `attribute_values`.

    The mappings are read-only. Instances compare by value but are not hashable.
    """

    word_counts: Mapping[str, int]
    brands: Mapping[str, str]
    categories: Mapping[str, str]
    attribute_values: Mapping[str, tuple[str, str]]
    attribute_candidates: Mapping[str, tuple[tuple[str, str, tuple[tuple[str, int], ...]], ...]] = field(
        default_factory=dict
    )
    # The currency most of the catalogue is priced in ("" when unknown): price bounds written
    # in another currency are converted into it (services.query_understanding.prices).
    currency: str = ""

    def __post_init__(self) -> None:
        for name in ("word_counts", "brands", "categories", "attribute_values", "attribute_candidates"):
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))

    @classmethod
    def empty(cls) -> CatalogVocabulary:
        """A vocabulary that knows nothing: no correction, no brand/category/attribute filters."""
        return cls(word_counts={}, brands={}, categories={}, attribute_values={})

    @classmethod
    def from_products(cls, products: Iterable[Mapping[str, Any]]) -> CatalogVocabulary:
        """Build the vocabulary from product mappings.

        Each product has `title`, `description`, `brand`, `category` (strings; missing or None
        is fine) and `attributes` (mapping of attribute name -> value; missing or None is fine,
        non-string values are ignored).

        Attribute values are recognised in queries only when all of these hold:
        the attribute is carried by at least `MIN_ATTRIBUTE_PRODUCTS` products and
        `MIN_ATTRIBUTE_SHARE` of the catalogue; it has at most `MAX_ATTRIBUTE_DISTINCT_VALUES`
        distinct values (or half its product count, if more) so identifiers and free text are
        left out; the value has 1 to `MAX_ATTRIBUTE_VALUE_WORDS` words, at least 2 characters,
        is not a number/size-number ("42", "10.5", "42-44") and is not a generic value such as
        "yes", "none" or "other". A value shared by several attributes goes by default to the
        attribute carried by more products; all of them are kept in `attribute_candidates`
        with the categories of the products carrying them.

        Categories are recognised by their full name, its leaf when it is a path, the singular
        of its last word, the possessive without apostrophe ("mens clothing"), and each part of
        a compound name ("laptop" for "Laptops & Tablets") that no other category shares.
        """
        word_counts: Counter[str] = Counter()
        brand_spellings: dict[str, Counter[str]] = defaultdict(Counter)
        category_spellings: dict[str, Counter[str]] = defaultdict(Counter)
        attr_names: dict[str, Counter[str]] = defaultdict(Counter)  # normalized -> spellings
        attr_products: Counter[str] = Counter()  # normalized attribute -> products carrying it
        currencies: Counter[str] = Counter()
        # (normalized attribute, normalized value) -> spellings of the value
        value_spellings: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        # (normalized attribute, normalized value) -> products carrying it, per category
        value_categories: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        n_products = 0

        for product in products:
            n_products += 1
            currencies[_text(product.get("currency")).strip().upper()] += 1
            title = _text(product.get("title"))
            brand = _text(product.get("brand"))
            category = _text(product.get("category"))
            description = _text(product.get("description"))
            for word in words(title):
                word_counts[word] += TITLE_WEIGHT
            word_counts.update(words(brand))
            word_counts.update(words(category))
            word_counts.update(words(description))
            if brand and normalize(brand):
                brand_spellings[normalize(brand)][brand] += 1
            if category and normalize(category):
                category_spellings[normalize(category)][category] += 1
            attributes = product.get("attributes") or {}
            if not isinstance(attributes, Mapping):
                continue
            seen_attrs: set[str] = set()
            for raw_name, raw_value in attributes.items():
                name, value = _text(raw_name), _text(raw_value)
                attr = normalize(name)
                if not attr or not value:
                    continue
                word_counts.update(words(value))
                attr_names[attr][name] += 1
                if attr not in seen_attrs:
                    seen_attrs.add(attr)
                    attr_products[attr] += 1
                value_spellings[(attr, normalize(value))][value] += 1
                if category:
                    value_categories[(attr, normalize(value))][category] += 1

        brands = {key: _most_common_first_seen(s) for key, s in sorted(brand_spellings.items())}

        categories: dict[str, str] = {}
        # Exact names first, so a derived variant never shadows a real category name.
        canonical = {
            key: _most_common_first_seen(s) for key, s in sorted(category_spellings.items())
        }
        categories.update(canonical)
        for key, name in canonical.items():
            for variant in sorted(_category_keys(key)):
                categories.setdefault(variant, name)
        # A part of a compound name stands for its category only when no other category
        # claims it (then it is ambiguous; the head-word rule may still score it lower).
        part_owners: dict[str, set[str]] = defaultdict(set)
        for key, name in canonical.items():
            for part in _category_part_keys(key):
                part_owners[part].add(name)
        for part, owners in sorted(part_owners.items()):
            if len(owners) == 1:
                categories.setdefault(part, next(iter(owners)))

        min_products = max(MIN_ATTRIBUTE_PRODUCTS, math.ceil(MIN_ATTRIBUTE_SHARE * n_products))
        distinct: Counter[str] = Counter(attr for attr, _ in value_spellings)
        eligible = {
            attr
            for attr, count in attr_products.items()
            if count >= min_products
            and distinct[attr] <= max(MAX_ATTRIBUTE_DISTINCT_VALUES, count // 2)
        }
        attribute_values: dict[str, tuple[str, str]] = {}
        candidates: dict[str, list[tuple[str, str, tuple[tuple[str, int], ...]]]] = defaultdict(list)
        # Attributes carried by more products win a value they share with another attribute
        # (the default reading); the others stay as candidates for queries naming a category.
        ordered = sorted(value_spellings.items(), key=lambda kv: (-attr_products[kv[0][0]], kv[0]))
        for (attr, key), spellings in ordered:
            if attr in eligible and _is_filterable_value(key):
                reading = (_most_common_first_seen(attr_names[attr]), _most_common_first_seen(spellings))
                attribute_values.setdefault(key, reading)
                in_categories = tuple(sorted(value_categories[(attr, key)].items()))
                candidates[key].append((*reading, in_categories))

        return cls(
            word_counts=dict(sorted(word_counts.items())),
            brands=brands,
            categories=categories,
            attribute_values=dict(sorted(attribute_values.items())),
            attribute_candidates={key: tuple(found) for key, found in sorted(candidates.items())},
            currency=next((code for code, _ in currencies.most_common() if code), ""),
        )

    # Lookup structures, built on first use and cached on the (immutable) instance.

    @cached_property
    def brand_matcher(self) -> PhraseMatcher:
        """Matches normalized brand names in a query."""
        return PhraseMatcher(self.brands)

    @cached_property
    def category_matcher(self) -> PhraseMatcher:
        """Matches normalized category names (and their singular/leaf variants) in a query."""
        return PhraseMatcher(self.categories)

    @cached_property
    def attribute_matcher(self) -> PhraseMatcher:
        """Matches known attribute values in a query, and their plural/possessive form ("cats"
        for "cat", "womens" for "women") unless that form is a value itself."""
        aliases: dict[str, str] = {}
        for key in self.attribute_values:
            head, _, last = key.rpartition(" ")
            form = plural(last)
            if form is not None:
                aliases.setdefault(f"{head} {form}" if head else form, key)
        return PhraseMatcher(self.attribute_values, aliases)

    @cached_property
    def category_heads(self) -> Mapping[str, tuple[str, ...]]:
        """Head word (last word, and its singular) of multi-word latin categories -> categories.

        "running shoes" has head "shoes"/"shoe"; single-word and Chinese categories have none
        (a full match already covers them). Stop words and words shorter than 3 letters are not
        heads.
        """
        heads: dict[str, set[str]] = defaultdict(set)
        for key, name in self.categories.items():
            if contains_cjk(key):
                continue
            tokens = words(key)
            if len(tokens) < 2:
                continue
            for head in {tokens[-1], singular(tokens[-1])}:
                if len(head) >= 3 and head not in STOP_WORDS and is_latin_word(head):
                    heads[head].add(name)
        return MappingProxyType({head: tuple(sorted(names)) for head, names in heads.items()})

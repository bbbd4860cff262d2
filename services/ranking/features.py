"""Ranking features of a (query, candidate) pair, all scaled to [0, 1].

| feature            | meaning                                                              |
|--------------------|----------------------------------------------------------------------|
| dense_similarity   | cosine of query and product embeddings, clipped to [0, 1]             |
| bm25               | BM25 coverage: BM25 / the query's ideal-match BM25, clipped to 1 (when |
|                    | retrieval sent no coverage: BM25 / best BM25 among the candidates)    |
| fusion             | reciprocal-rank-fusion score / its maximum (in both lists at rank 1)  |
| brand_match        | 1 if the product's brand is one the query named                       |
| category_match     | 1 if the product's category is one the query named                    |
| attribute_match    | share of the query's attribute values (e.g. color=red) it has         |
| popularity         | log(1 + engagement) / log(1 + best engagement), from events           |
| personal_affinity  | retrieval's personal_score: the product's probability relative to the |
|                    | best candidate (sequence model or text history); 0 with no history    |

The order of FEATURE_NAMES is the input layout of the ONNX CTR head (`features` tensor).
`validate_candidate` and `validate_preferences` are the input rules of a ranking request: a
NaN or infinite retrieval score would otherwise become a NaN feature, and a NaN score the
sort cannot order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from services.common.errors import InvalidArgument

FEATURE_NAMES = (
    "dense_similarity",
    "bm25",
    "fusion",
    "brand_match",
    "category_match",
    "attribute_match",
    "popularity",
    "personal_affinity",
)
RRF_MAX = 2.0 / 61.0  # rank 1 in both lists; retrieval rescales its fusion settings to this scale
MAX_ID_CHARS = 128
# Preferences come from one query's understanding; a query of at most 512 characters cannot
# name more than 256 distinct brands, categories or attributes (one letter and a space each).
MAX_PREFERRED = 256
MAX_PREFERRED_ATTRIBUTES = 256
MAX_PREFERENCE_CHARS = 200
SCORE_FIELDS = ("lexical_score", "dense_score", "fused_score", "lexical_coverage", "personal_score", "multilingual_score")
RANK_FIELDS = ("lexical_rank", "dense_rank", "multilingual_rank")


class RankingCandidate(NamedTuple):
    """One retrieval candidate as ranking reads it. A NamedTuple, not a frozen dataclass: a
    request builds 200 of them, and a frozen dataclass's __init__ sets each field through
    object.__setattr__, several times slower than building a tuple."""

    product_id: str
    brand: str
    category: str
    attributes: Mapping[str, str]
    lexical_score: float
    dense_score: float
    fused_score: float
    lexical_coverage: float = 0.0
    personal_score: float = 0.0
    # Ranks in retrieval's lists (1-based, 0 = not in it) and the multilingual space's cosine:
    # relevance features (services.ranking.relevance), not CTR head inputs.
    lexical_rank: int = 0
    dense_rank: int = 0
    multilingual_score: float = 0.0
    multilingual_rank: int = 0
    title: str = ""
    price: float = 0.0
    # Merchandising rules (retrieval marks them): log-odds added to the score, whether the
    # product goes to the end of the order, and the rules that did either.
    rule_boost: float = 0.0
    buried: bool = False
    rule_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class QueryPreferences:
    brands: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    attributes: Mapping[str, str] = field(default_factory=dict)


def validate_candidate(candidate: RankingCandidate, where: str) -> RankingCandidate:
    """Raises InvalidArgument naming `where.<field>`; returns the candidate."""
    if not 1 <= len(candidate.product_id) <= MAX_ID_CHARS:
        raise InvalidArgument(f"{where}.product.id", f"must be 1-{MAX_ID_CHARS} characters")
    # One check for the common case (the sum of finite scores is finite unless it overflows),
    # the field named only when it fails: per-field checks of 200 candidates per request were a
    # visible part of ranking's CPU.
    c = candidate
    if not math.isfinite(c.lexical_score + c.dense_score + c.fused_score + c.lexical_coverage + c.personal_score
                         + c.multilingual_score):
        for name in SCORE_FIELDS:
            value = getattr(candidate, name)
            if not math.isfinite(value):
                raise InvalidArgument(f"{where}.{name}", f"must be a finite number, got {value}")
    if min(c.lexical_rank, c.dense_rank, c.multilingual_rank) < 0:
        name = next(name for name in RANK_FIELDS if getattr(candidate, name) < 0)
        raise InvalidArgument(f"{where}.{name}", f"must be >= 0 (0 = not in that list), got {getattr(candidate, name)}")
    return candidate


def validate_preferences(preferences: QueryPreferences) -> QueryPreferences:
    """Raises InvalidArgument naming `preferred_<field>`; returns the preferences."""
    for name, values in (("preferred_brands", preferences.brands), ("preferred_categories", preferences.categories)):
        if len(values) > MAX_PREFERRED:
            raise InvalidArgument(name, f"must list at most {MAX_PREFERRED} values, got {len(values)}")
        for index, value in enumerate(values):
            if len(value) > MAX_PREFERENCE_CHARS:
                raise InvalidArgument(f"{name}[{index}]", f"must be at most {MAX_PREFERENCE_CHARS} characters")
    if len(preferences.attributes) > MAX_PREFERRED_ATTRIBUTES:
        raise InvalidArgument(
            "preferred_attributes",
            f"must have at most {MAX_PREFERRED_ATTRIBUTES} entries, got {len(preferences.attributes)}",
        )
    for key, value in preferences.attributes.items():
        if len(key) > MAX_PREFERENCE_CHARS or len(value) > MAX_PREFERENCE_CHARS:
            raise InvalidArgument(
                f"preferred_attributes[{key[:40]!r}]", f"names and values must be at most {MAX_PREFERENCE_CHARS} characters"
            )
    return preferences


def feature_matrix(
    candidates: Sequence[RankingCandidate],
    preferences: QueryPreferences,
    popularity: Mapping[str, float],
    best_engagement: float | None = None,
) -> np.ndarray:
    """float32 [len(candidates), len(FEATURE_NAMES)]. `best_engagement`: the largest value of
    `popularity`, when the caller keeps it (finding it scans every engaged product, per
    request); None = found here."""
    features = np.zeros((len(candidates), len(FEATURE_NAMES)), dtype=np.float32)
    if not candidates:
        return features
    best_bm25 = max((c.lexical_score for c in candidates), default=0.0)
    # Coverage is absolute (a product matching one weak word of four scores low even if it is
    # the best lexical match); max-normalisation is the fallback for callers that lack it.
    has_coverage = any(c.lexical_coverage > 0 for c in candidates)
    engagement = [popularity.get(c.product_id, 0.0) for c in candidates]
    if best_engagement is None:
        best_engagement = max(popularity.values(), default=0.0)
    brands = {b.casefold() for b in preferences.brands}
    categories = {c.casefold() for c in preferences.categories}
    wanted = {k.casefold(): v.casefold() for k, v in preferences.attributes.items()}
    # Column by column over arrays: a Python loop writing single cells was most of ranking's
    # CPU per request (200 candidates, `shelfwise bench search` profile). Same float64
    # arithmetic, then one cast to float32.
    def column(name: str) -> np.ndarray:
        # map(attrgetter) rather than a generator of getattr: half the CPU (24 -> 11 µs per 200).
        return np.fromiter(map(attrgetter(name), candidates), dtype=np.float64, count=len(candidates))

    features[:, 0] = np.clip(column("dense_score"), 0.0, 1.0)
    if has_coverage:
        features[:, 1] = np.clip(column("lexical_coverage"), 0.0, 1.0)
    elif best_bm25 > 0:
        features[:, 1] = column("lexical_score") / best_bm25
    features[:, 2] = np.minimum(column("fused_score") / RRF_MAX, 1.0)
    if brands:
        features[:, 3] = [1.0 if c.brand.casefold() in brands else 0.0 for c in candidates]
    if categories:
        features[:, 4] = [1.0 if c.category.casefold() in categories else 0.0 for c in candidates]
    if wanted:
        for row, candidate in enumerate(candidates):
            have = {k.casefold(): v.casefold() for k, v in candidate.attributes.items()}
            features[row, 5] = sum(have.get(k) == v for k, v in wanted.items()) / len(wanted)
    if best_engagement > 0:
        features[:, 6] = np.log1p(np.asarray(engagement, dtype=np.float64)) / math.log1p(best_engagement)
    features[:, 7] = np.clip(column("personal_score"), 0.0, 1.0)
    return features

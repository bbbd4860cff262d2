"""The ranking domain: features → scores → a stable order → the requested page with reasons.

Search results with a deployed relevance ranker (`relevance_ranker`, boosted trees trained on
judgments, `shelfwise train ranker`) are ordered by

    score = relevance
            + brand_weight · brand_match + attribute_weight · attribute_match
            + popularity_weight · popularity + personal_weight · personal_affinity
            + ctr_weight · (logit ctr − mean logit ctr over the candidates)
            + low_price_weight · cheapness   (only when the query asks for something cheap)

relevance first: the ranker's calibrated log-odds that the candidate is what the query asks
for. Then, on the same log-odds scale, what the ranker cannot learn from the judgments it was
trained on (the Instacart benchmark has no brands or attributes): whether the product has the
brand and the attribute values the query named ("red" -> color=red). Then engagement: how
engaged-with the product is and how well it fits the shopper's history (the features of
services/ranking/features.py), and, only when the deployed CTR head was trained on the shop's
logged events, the head's relative click log-odds (the prior, version 1, learned
nothing from behaviour and would only count text relevance twice). The weights are settings
(RankingSettings); their defaults are a design choice, not a measurement: a named brand or
attribute is worth one log-odds unit, an engaged-with product gains at most half a unit, a
product that fits the shopper at most one. `cheapness` is 1 for the cheapest candidate and 0 for
the dearest (by price rank), so "cheap gift for my wife" lifts the cheaper gifts by up to one
log-odds unit without letting a cheap irrelevant product in (without a relevance ranker it
adds a tenth of that to the formula's or the CTR head's score). Candidates whose relevance
probability reaches the ranker's threshold count as relevant (`Ranking.relevant`, the search's
total_size).

Without a relevance ranker, or for recommendations (no query), or when it fails (degraded
"relevance_ranker"), the deployed CTR head (or the documented formula) orders, as before.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import numpy as np

from services.common.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from services.common.logs import RepeatFilter
from services.common.popularity import PopularityCache
from services.ranking.features import FEATURE_NAMES, QueryPreferences, RankingCandidate, feature_matrix
from services.ranking.relevance import RELEVANCE_FEATURES, CategoryVote, neutral_row, relevance_matrix
from services.ranking.scorers import FeatureScorer, OnnxRelevanceRanker, Scorer

log = logging.getLogger(__name__)
log.addFilter(RepeatFilter())  # its warnings are per request: rate limited (services/common/logs.py)

MAX_CANDIDATES = 2_000
MAX_PAGE = 100
# Ranking policies (RankRequest.policy), compared by experiments: the deployed scorer (default),
# the documented formula whatever is deployed, or retrieval's order kept as it came.
MODEL, FORMULA, RETRIEVAL_ORDER = "model", "formula", "retrieval"
POLICIES = (MODEL, FORMULA, RETRIEVAL_ORDER)
RETRIEVAL_ORDER_VERSION = "retrieval-order"
# What ranking learned from the shop's behaviour; an experiment arm can leave any of them out
# (RankRequest.exclude_*) to measure what each is worth. Excluded parts stay in the features
# and reasons (impressions log the same features whatever the arm) but do not move the score.
POPULARITY, PERSONALIZATION, CTR_HEAD = "popularity", "personalization", "ctr_head"
LEARNED_PARTS = (POPULARITY, PERSONALIZATION, CTR_HEAD)
_LEARNED_FEATURES = {POPULARITY: "popularity", PERSONALIZATION: "personal_affinity"}


# Log-odds: a relevance feature whose part of a score is smaller is left out of its reasons.
MIN_REASON_PART = 0.01
# The scores of the formula and the CTR head are about a tenth of the relevance log-odds' range.
FORMULA_SCALE = 0.1
# How many of the query's voted categories a response reports, and the least share reported.
QUERY_CATEGORIES = 3
MIN_CATEGORY_SHARE = 0.1


@dataclass(frozen=True)
class RankingQuery:
    """What ranking knows of the query: its text (empty: browsing or recommending) and whether
    retrieval read it through an English rendering."""

    text: str = ""
    translated: bool = False
    prefers_low_price: bool = False


@dataclass(frozen=True)
class ScoringPolicy:
    """How a request's candidates are scored: `policy` (MODEL, FORMULA or RETRIEVAL_ORDER), a
    pinned CTR head version (None: the deployed head) and the learned parts (LEARNED_PARTS)
    left out of the score."""

    policy: str = MODEL
    ctr_head_version: int | None = None
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True)
class _Candidates:
    """The unique candidates of a request with their engagement and relevance feature rows, and
    the query's category vote reported with the ranking."""

    unique: list[RankingCandidate]
    features: np.ndarray
    relevance_features: np.ndarray
    categories: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class AdjustmentWeights:
    """How named preferences and engagement adjust relevance-ranked results, in log-odds per
    unit of each feature (see the module docstring)."""

    brand_match: float = 1.0
    attribute_match: float = 1.0
    popularity: float = 0.5
    personal_affinity: float = 1.0
    ctr: float = 1.0
    # Per unit of `cheapness` when the query asks for something cheap.
    low_price: float = 1.0

    def feature_weights(self, exclude: frozenset[str] = frozenset()) -> dict[str, float]:
        """Weight of each CTR-head feature that adjusts relevance directly; 0 for the learned
        parts in `exclude`."""
        return {
            "brand_match": self.brand_match, "attribute_match": self.attribute_match,
            "popularity": 0.0 if POPULARITY in exclude else self.popularity,
            "personal_affinity": 0.0 if PERSONALIZATION in exclude else self.personal_affinity,
        }


@dataclass(frozen=True)
class RankedItem:
    product_id: str
    score: float
    position: int
    reasons: tuple[tuple[str, float, float], ...]  # (feature, value, contribution)


@dataclass(frozen=True)
class Ranking:
    items: list[RankedItem]
    total: int
    model_version: str
    degraded: tuple[str, ...] = ()
    # The query's category vote, best first (empty without a query).
    query_categories: tuple[tuple[str, float], ...] = ()
    # Candidates the relevance ranker judges relevant (None: no relevance ranker scored them).
    relevant: int | None = None


class Ranker:
    """Scores with the deployed scorer; if it is unreachable (a CTR head on a Triton that is
    down), falls back to the documented feature scoring for that request and says so."""

    def __init__(
        self,
        scorer: Scorer,
        popularity: PopularityCache,
        fallback: Scorer | None = None,
        versions: Callable[[int], Scorer] | None = None,
        relevance: OnnxRelevanceRanker | None = None,
        adjustments: AdjustmentWeights = AdjustmentWeights(),
    ):
        self._scorer = scorer
        self._popularity = popularity
        self._fallback = fallback or FeatureScorer()
        # Pinned CTR head versions (experiments): version -> its scorer; raises NotFound.
        self._versions = versions
        self._relevance = relevance
        self._adjustments = adjustments

    @property
    def model_version(self) -> str:
        return self._scorer.version

    def _scorer_for(self, policy: str, ctr_head_version: int | None, exclude: frozenset[str]) -> Scorer:
        if policy not in POLICIES:
            raise InvalidArgument("policy", f"must be one of {', '.join(POLICIES)}, got {policy!r}")
        if ctr_head_version is not None:
            if policy != MODEL:
                raise InvalidArgument("ctr_head_version", "only applies to the model policy")
            if CTR_HEAD in exclude:
                raise InvalidArgument("ctr_head_version", "cannot pin a CTR head the request excludes")
            if ctr_head_version < 1:
                raise InvalidArgument("ctr_head_version", f"must be >= 1 (0 = the deployed head), got {ctr_head_version}")
            if self._versions is None:
                raise NotFound(f"ctr_head_version: no model repository to load ctr_head/{ctr_head_version} from")
            return self._versions(ctr_head_version)
        return self._fallback if policy == FORMULA or CTR_HEAD in exclude else self._scorer

    async def rank(
        self,
        candidates: Sequence[RankingCandidate],
        preferences: QueryPreferences,
        offset: int,
        limit: int,
        query: RankingQuery = RankingQuery(),
        scoring: ScoringPolicy = ScoringPolicy(),
    ) -> Ranking:
        policy, exclude = scoring.policy, scoring.exclude
        if len(candidates) > MAX_CANDIDATES:
            raise InvalidArgument("candidates", f"must be at most {MAX_CANDIDATES}, got {len(candidates)}")
        if offset < 0:
            raise InvalidArgument("offset", f"must be >= 0, got {offset}")
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidArgument("limit", f"must be between 1 and {MAX_PAGE}, got {limit}")
        seen: set[str] = set()
        unique = []
        for candidate in candidates:  # a duplicated candidate would take two places on the page
            if candidate.product_id not in seen:
                seen.add(candidate.product_id)
                unique.append(candidate)
        features = feature_matrix(unique, preferences, self._popularity.values, self._popularity.best)
        relevance_features, vote = relevance_matrix(unique, preferences, query.translated) if query.text else (None, None)
        categories = _reported(vote)
        if policy == RETRIEVAL_ORDER:
            ranking = await self._retrieval_order(unique, features, offset, limit)
            return replace(ranking, query_categories=categories)
        unknown = exclude - set(LEARNED_PARTS)
        if unknown:
            raise InvalidArgument("exclude", f"unknown learned parts {sorted(unknown)}; known: {', '.join(LEARNED_PARTS)}")
        scorer, degraded = self._scorer_for(policy, scoring.ctr_head_version, exclude), ()
        if policy == MODEL and self._relevance is not None and relevance_features is not None:
            try:
                scored = _Candidates(unique, features, relevance_features, categories)
                return await self._rank_by_relevance(scored, scorer, offset, limit, query, exclude)
            except (Unavailable, DeadlineExceeded) as error:
                log.warning("%s unavailable, ranking by %s: %s", self._relevance.version, scorer.version, error)
                degraded = ("relevance_ranker",)
        scored = _without(features, exclude)
        try:
            scores = await scorer.score(scored)
        except (Unavailable, DeadlineExceeded) as error:
            log.warning("%s unavailable, ranking by %s: %s", scorer.version, self._fallback.version, error)
            scorer, degraded = self._fallback, (*degraded, "ctr_head")
            scores = await scorer.score(scored)
        if query.prefers_low_price:
            scores = scores + FORMULA_SCALE * self._adjustments.low_price * cheapness(unique)
        scores = scores + FORMULA_SCALE * rule_boosts(unique)
        order = merchandised_order(scores, unique)
        page = order[offset : offset + limit]
        try:
            contributions = await scorer.contributions(scored[page]) if len(page) else np.zeros((0, 0))
        except (Unavailable, DeadlineExceeded):
            # Scores came from the head; only the explanation falls back to the formula's parts.
            contributions = await self._fallback.contributions(scored[page])
            degraded = (*degraded, "ctr_head")
        items = []
        for row, index in enumerate(page.tolist()):
            reasons = _reasons(features[index], contributions[row]) + rule_reasons(unique[index], FORMULA_SCALE)
            items.append(RankedItem(unique[index].product_id, float(scores[index]), offset + row + 1, reasons))
        return Ranking(items, len(unique), scorer.version, degraded, categories)

    async def _rank_by_relevance(
        self, scored: _Candidates, engagement_head: Scorer, offset: int, limit: int, query: RankingQuery,
        exclude: frozenset[str],
    ) -> Ranking:
        """Relevance first, engagement as an adjustment (the module docstring)."""
        unique, features, relevance_features = scored.unique, scored.features, scored.relevance_features
        categories = scored.categories
        relevance = (await self._relevance.score(relevance_features)).astype(np.float64)
        weights = self._adjustments
        adjustments = feature_adjustments(features, relevance, weights, exclude)
        adjustment = adjustments.sum(axis=1)
        version = self._relevance.version
        degraded: tuple[str, ...] = ()
        if weights.ctr and CTR_HEAD not in exclude and getattr(engagement_head, "trained_on_events", False):
            try:
                ctr = np.clip((await engagement_head.score(features)).astype(np.float64), 1e-6, 1 - 1e-6)
                click = np.log(ctr) - np.log1p(-ctr)
                adjustment = adjustment + weights.ctr * (click - click.mean())
                version += f"+{engagement_head.version}"
            except (Unavailable, DeadlineExceeded) as error:
                log.warning("%s unavailable, relevance ranked without it: %s", engagement_head.version, error)
                degraded = ("ctr_head",)
        if query.prefers_low_price:
            adjustment = adjustment + weights.low_price * cheapness(unique)
        scores = relevance + adjustment + rule_boosts(unique)
        order = merchandised_order(scores, unique)
        page = order[offset : offset + limit]
        neutral = neutral_row(len(unique))
        parts = (
            await self._relevance.contributions(relevance_features[page], neutral) if len(page) else np.zeros((0, 0))
        )
        probability = 1.0 / (1.0 + np.exp(-relevance))
        items = []
        # Python lists of the page's rows: element access on numpy arrays costs more than the rest.
        page_features, page_relevance = features[page].tolist(), relevance_features[page].tolist()
        page_adjustments = adjustments[page].tolist()
        page_parts = parts.tolist() if len(page) else []
        for row, index in enumerate(page.tolist()):
            # Every non-zero feature of both sets (the CTR head's are what impressions log),
            # each with its part of the score: the ranker's (occlusion) or the adjustment's.
            reasons = {
                name: (value, part)
                for name, value, part in zip(FEATURE_NAMES, page_features[row], page_adjustments[row])
                if value != 0.0
            }
            for name, value, part in zip(RELEVANCE_FEATURES, page_relevance[row], page_parts[row]):
                # A relevance feature that moves the score by less than MIN_REASON_PART is not a
                # reason (and every reason travels to the caller and into the impression log).
                if value != 0.0 and abs(part) >= MIN_REASON_PART:
                    reasons[name] = (value, part)
            reasons["relevance_probability"] = (float(probability[index]), float(relevance[index]))
            items.append(RankedItem(
                unique[index].product_id, float(scores[index]), offset + row + 1,
                tuple((name, value, part) for name, (value, part) in reasons.items()) + rule_reasons(unique[index]),
            ))
        relevant = int(np.count_nonzero(probability >= self._relevance.threshold))
        return Ranking(items, len(unique), version, degraded, categories, relevant)

    async def _retrieval_order(self, unique, features: np.ndarray, offset: int, limit: int) -> Ranking:
        """Candidates in the order retrieval sent them; the score is a rank score (1 for the
        first, falling linearly), and the reasons still list the features, so that logged
        impressions carry the same features whatever the policy."""
        n = len(unique)
        items = []
        for index in range(offset, min(offset + limit, n)):
            reasons = _reasons(features[index], np.zeros(len(FEATURE_NAMES)))
            items.append(RankedItem(unique[index].product_id, 1.0 - index / n, index + 1, reasons))
        return Ranking(items, n, RETRIEVAL_ORDER_VERSION)


def feature_adjustments(
    features: np.ndarray, relevance: np.ndarray, weights: AdjustmentWeights, exclude: frozenset[str] = frozenset()
) -> np.ndarray:
    """float64 [n, len(FEATURE_NAMES)]: the log-odds each CTR-head feature adds to a candidate's
    relevance (0 for features that do not adjust it). Named brand and attribute matches count at
    their weight. Engagement (popularity, personal affinity) counts at its weight times the
    probability that the candidate is relevant (sigmoid of `relevance`): it orders products
    among the relevant ones, and a product popular elsewhere in the shop, or like what the
    shopper bought before, does not climb into a search it does not answer."""
    relevant = 1.0 / (1.0 + np.exp(-relevance))
    parts = np.zeros(features.shape, dtype=np.float64)
    for name, weight in weights.feature_weights(exclude).items():
        column = FEATURE_NAMES.index(name)
        gate = relevant if name in _LEARNED_FEATURES.values() else 1.0
        parts[:, column] = weight * features[:, column].astype(np.float64) * gate
    return parts


def _without(features: np.ndarray, exclude: frozenset[str]) -> np.ndarray:
    """The features a scorer reads: excluded learned features set to 0 (a copy when any is)."""
    columns = [FEATURE_NAMES.index(_LEARNED_FEATURES[part]) for part in exclude if part in _LEARNED_FEATURES]
    if not columns:
        return features
    scored = features.copy()
    scored[:, columns] = 0.0
    return scored


def cheapness(candidates: Sequence[RankingCandidate]) -> np.ndarray:
    """1 for the cheapest candidate, 0 for the dearest, by price rank (ties share a rank);
    0 for every candidate when they cost the same."""
    prices = np.array([c.price for c in candidates], dtype=np.float64)
    distinct = np.unique(prices)
    if len(distinct) < 2:
        return np.zeros(len(prices))
    return 1.0 - np.searchsorted(distinct, prices) / (len(distinct) - 1)


def _reported(vote: CategoryVote | None) -> tuple[tuple[str, float], ...]:
    if vote is None:
        return ()
    return tuple((category, share) for category, share in vote.top(QUERY_CATEGORIES) if share >= MIN_CATEGORY_SHARE)


def rule_boosts(candidates: Sequence[RankingCandidate]) -> np.ndarray:
    """The log-odds merchandising rules add to each candidate (BOOST rules; 0 for most)."""
    return np.fromiter((c.rule_boost for c in candidates), dtype=np.float64, count=len(candidates))


def merchandised_order(scores: np.ndarray, candidates: Sequence[RankingCandidate]) -> np.ndarray:
    """Best score first, buried candidates (BURY rules) after all others. Ties keep retrieval's
    order (a stable sort), so equal scores never shuffle between pages."""
    buried = np.fromiter((c.buried for c in candidates), dtype=bool, count=len(candidates))
    if not buried.any():
        return np.argsort(-scores, kind="stable")
    return np.lexsort((-scores, buried))


def rule_reasons(candidate: RankingCandidate, scale: float = 1.0) -> tuple[tuple[str, float, float], ...]:
    """A reason "rule:<id>" per rule that moved the candidate: for BOOST rules the product's
    total rule boost as the value and an equal share of its part of the score each; for the
    BURY rule (retrieval lists it last) the value -1 and no part of the score."""
    if not candidate.rule_ids:
        return ()
    boosting = candidate.rule_ids[:-1] if candidate.buried else candidate.rule_ids
    reasons = [
        (f"rule:{rule_id}", candidate.rule_boost, scale * candidate.rule_boost / len(boosting)) for rule_id in boosting
    ]
    if candidate.buried:
        reasons.append((f"rule:{candidate.rule_ids[-1]}", -1.0, 0.0))
    return tuple(reasons)


def _reasons(feature_row: np.ndarray, contribution_row: np.ndarray) -> tuple[tuple[str, float, float], ...]:
    """(feature, value, contribution) of each non-zero feature: what the response explains and
    what the gateway logs with the impression (an absent feature means 0)."""
    return tuple(
        (name, float(feature_row[column]), float(contribution_row[column]))
        for column, name in enumerate(FEATURE_NAMES)
        if feature_row[column] != 0.0
    )

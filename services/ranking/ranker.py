"""The ranking domain: features → scores → a stable order → the requested page with reasons."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping, Sequence

import numpy as np

from services.common.background import Periodic
from services.common.errors import DeadlineExceeded, InvalidArgument, NotFound, Unavailable
from services.ranking.features import FEATURE_NAMES, QueryPreferences, RankingCandidate, feature_matrix
from services.ranking.scorers import FeatureScorer, Scorer

log = logging.getLogger(__name__)

MAX_CANDIDATES = 2_000
MAX_PAGE = 100
# Ranking policies (RankRequest.policy), compared by experiments: the deployed scorer (default),
# the documented formula whatever is deployed, or retrieval's order kept as it came.
MODEL, FORMULA, RETRIEVAL_ORDER = "model", "formula", "retrieval"
POLICIES = (MODEL, FORMULA, RETRIEVAL_ORDER)
RETRIEVAL_ORDER_VERSION = "retrieval-order"


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


class PopularityCache:
    """Engagement per product from events, refreshed in the background so that ranking never
    waits on (or fails with) the events service; a failed refresh keeps the last values."""

    def __init__(self, fetch: Callable[[], Awaitable[Mapping[str, float]]], refresh_seconds: float):
        self._fetch = fetch
        self.values = {}
        self.refreshed_at: float | None = None
        self._refresher = Periodic("popularity refresh", self.refresh, refresh_seconds)

    @property
    def values(self) -> Mapping[str, float]:
        return self._values

    @values.setter
    def values(self, values: Mapping[str, float]) -> None:
        # The largest engagement, found once per refresh rather than once per request.
        self._values, self.best = values, max(values.values(), default=0.0)

    async def refresh(self) -> None:
        try:
            self.values = dict(await self._fetch())
            self.refreshed_at = time.monotonic()
        except Exception as error:  # events down: keep serving with the last known values
            log.warning("popularity refresh failed, keeping %d cached values: %s", len(self.values), error)

    def start(self) -> None:
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()


class Ranker:
    """Scores with the deployed scorer; if it is unreachable (a CTR head on a Triton that is
    down), falls back to the documented feature scoring for that request and says so."""

    def __init__(
        self,
        scorer: Scorer,
        popularity: PopularityCache,
        fallback: Scorer | None = None,
        versions: Callable[[int], Scorer] | None = None,
    ):
        self._scorer = scorer
        self._popularity = popularity
        self._fallback = fallback or FeatureScorer()
        # Pinned CTR head versions (experiments): version -> its scorer; raises NotFound.
        self._versions = versions

    @property
    def model_version(self) -> str:
        return self._scorer.version

    def _scorer_for(self, policy: str, ctr_head_version: int | None) -> Scorer:
        if policy not in POLICIES:
            raise InvalidArgument("policy", f"must be one of {', '.join(POLICIES)}, got {policy!r}")
        if ctr_head_version is not None:
            if policy != MODEL:
                raise InvalidArgument("ctr_head_version", "only applies to the model policy")
            if ctr_head_version < 1:
                raise InvalidArgument("ctr_head_version", f"must be >= 1 (0 = the deployed head), got {ctr_head_version}")
            if self._versions is None:
                raise NotFound(f"ctr_head_version: no model repository to load ctr_head/{ctr_head_version} from")
            return self._versions(ctr_head_version)
        return self._fallback if policy == FORMULA else self._scorer

    async def rank(
        self,
        candidates: Sequence[RankingCandidate],
        preferences: QueryPreferences,
        offset: int,
        limit: int,
        policy: str = MODEL,
        ctr_head_version: int | None = None,
    ) -> Ranking:
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
        if policy == RETRIEVAL_ORDER:
            return await self._retrieval_order(unique, features, offset, limit)
        scorer, degraded = self._scorer_for(policy, ctr_head_version), ()
        try:
            scores = await scorer.score(features)
        except (Unavailable, DeadlineExceeded) as error:
            log.warning("%s unavailable, ranking by %s: %s", scorer.version, self._fallback.version, error)
            scorer, degraded = self._fallback, ("ctr_head",)
            scores = await scorer.score(features)
        # Ties keep retrieval's order (stable sort), so equal scores never shuffle between pages.
        order = np.argsort(-scores, kind="stable")
        page = order[offset : offset + limit]
        try:
            contributions = await scorer.contributions(features[page]) if len(page) else np.zeros((0, 0))
        except (Unavailable, DeadlineExceeded):
            # Scores came from the head; only the explanation falls back to the formula's parts.
            contributions = await self._fallback.contributions(features[page])
            degraded = ("ctr_head",)
        items = []
        for row, index in enumerate(page.tolist()):
            reasons = _reasons(features[index], contributions[row])
            items.append(RankedItem(unique[index].product_id, float(scores[index]), offset + row + 1, reasons))
        return Ranking(items, len(unique), scorer.version, degraded)

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


def _reasons(feature_row: np.ndarray, contribution_row: np.ndarray) -> tuple[tuple[str, float, float], ...]:
    """(feature, value, contribution) of each non-zero feature: what the response explains and
    what the gateway logs with the impression (an absent feature means 0)."""
    return tuple(
        (name, float(feature_row[column]), float(contribution_row[column]))
        for column, name in enumerate(FEATURE_NAMES)
        if feature_row[column] != 0.0
    )

"""Ranking test helpers shared by several unit test modules: candidates, varied candidates and a
popularity cache filled by hand."""

from __future__ import annotations

import numpy as np

from services.ranking.features import RRF_MAX, RankingCandidate
from services.common.popularity import PopularityCache


def candidate(
    product_id: str,
    lexical: float = 0.0,
    dense: float = 0.0,
    fused: float = 0.0,
    brand: str = "",
    category: str = "",
    attributes: dict | None = None,
) -> RankingCandidate:
    return RankingCandidate(product_id, brand, category, attributes or {}, lexical, dense, fused)


def popularity(values: dict[str, float] | None = None) -> PopularityCache:
    async def fetch():
        return values or {}

    cache = PopularityCache(fetch, refresh_seconds=60)
    cache.values = dict(values or {})
    return cache


def varied_candidates(count: int = 12) -> list[RankingCandidate]:
    rng = np.random.default_rng(0)
    return [
        candidate(f"p{i}", lexical=float(rng.uniform(0, 20)), dense=float(rng.uniform(-0.2, 1.0)), fused=float(rng.uniform(0, RRF_MAX)))
        for i in range(count)
    ]

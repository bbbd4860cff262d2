"""Fusion of the lexical and dense candidate lists: weighted reciprocal rank fusion.

score(d) = w_lexical / (k + rank_lexical(d)) + w_dense / (k + rank_dense(d)), a list that
misses d adds nothing (Cormack et al., 2009, with a weight per list). Rank-based, so BM25's
unbounded scores and cosine similarities never have to share a scale. The defaults were tuned
on the dev split of the Instacart benchmark (``shelfwise eval tune-fusion``) and are settings,
so a shop can tune them on its own judgments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from services.common.config import env_float

DEFAULT_K = 60.0
DEFAULT_LEXICAL_WEIGHT = 0.5  # dev split, bm25 + fine-tuned e5: 0.494 NDCG@10 vs 0.484 at 1.0
# Ranking reads the fused score as a feature on the scale of plain RRF (k = 60, both weights 1):
# rank 1 in both lists = 2/61. Scores handed on are rescaled to it, whatever the settings.
REFERENCE_MAX = 2.0 / 61.0


@dataclass(frozen=True)
class Fusion:
    k: float = DEFAULT_K
    lexical_weight: float = DEFAULT_LEXICAL_WEIGHT
    dense_weight: float = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Fusion":
        return cls(
            k=env_float("SHELFWISE_FUSION_K", DEFAULT_K, environ, minimum=0.0),
            lexical_weight=env_float("SHELFWISE_FUSION_LEXICAL_WEIGHT", DEFAULT_LEXICAL_WEIGHT, environ, minimum=0.0),
        )

    def contribution(self, lexical_rank: int, dense_rank: int) -> float:
        """Fused score from 1-based ranks; 0 means "not in that list"."""
        return (self.lexical_weight / (self.k + lexical_rank) if lexical_rank else 0.0) + (
            self.dense_weight / (self.k + dense_rank) if dense_rank else 0.0
        )

    def scaled(self, lexical_rank: int, dense_rank: int) -> float:
        """`contribution` rescaled so that rank 1 in both lists is REFERENCE_MAX."""
        best = (self.lexical_weight + self.dense_weight) / (self.k + 1)
        return self.contribution(lexical_rank, dense_rank) * (REFERENCE_MAX / best) if best > 0 else 0.0

    def scaled_ranks(self, lexical_ranks: np.ndarray, dense_ranks: np.ndarray) -> np.ndarray:
        """`scaled` of many (lexical rank, dense rank) pairs at once, the same float64 values."""
        lexical_ranks = np.asarray(lexical_ranks, dtype=np.float64)
        dense_ranks = np.asarray(dense_ranks, dtype=np.float64)
        with np.errstate(divide="ignore"):  # rank 0 with k = 0: the term is dropped anyway
            contribution = np.where(lexical_ranks > 0, self.lexical_weight / (self.k + lexical_ranks), 0.0) + np.where(
                dense_ranks > 0, self.dense_weight / (self.k + dense_ranks), 0.0
            )
        best = (self.lexical_weight + self.dense_weight) / (self.k + 1)
        return contribution * (REFERENCE_MAX / best) if best > 0 else np.zeros_like(contribution)

    def fuse_rankings(
        self, lexical: Sequence[tuple[str, float]], dense: Sequence[tuple[str, float]]
    ) -> list[tuple[str, float]]:
        """Two (id, score) lists, best first → one fused list, best first (ties: dense score)."""
        lexical_rank = {doc: rank for rank, (doc, _) in enumerate(lexical, start=1)}
        dense_rank = {doc: rank for rank, (doc, _) in enumerate(dense, start=1)}
        dense_score = dict(dense)
        fused = [
            (doc, self.contribution(lexical_rank.get(doc, 0), dense_rank.get(doc, 0)))
            for doc in dict.fromkeys([doc for doc, _ in lexical] + [doc for doc, _ in dense])
        ]
        fused.sort(key=lambda item: (-item[1], -dense_score.get(item[0], float("-inf"))))
        return fused

    def describe(self) -> str:
        return f"RRF k={self.k:g}, lexical weight {self.lexical_weight:g}, dense weight {self.dense_weight:g}"

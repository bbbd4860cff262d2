"""Fusion of the candidate lists: weighted reciprocal rank fusion.

score(d) = Σ_list w_list / (k + rank_list(d)) over the lexical (BM25) list, the English dense
list and the multilingual dense list; a list that misses d adds nothing (Cormack et al., 2009,
with a weight per list). Rank-based, so BM25's unbounded scores and cosine similarities never
have to share a scale. The defaults were tuned on the dev split of the Instacart benchmark
(``shelfwise eval tune-fusion``) and are settings, so a shop can tune them on its own judgments.
Fusion decides which candidates reach ranking and their order when ranking is down; ranking
reads every list's score and rank, not only the fused score.
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
    multilingual_weight: float = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Fusion":
        return cls(
            k=env_float("SHELFWISE_FUSION_K", DEFAULT_K, environ, minimum=0.0),
            lexical_weight=env_float("SHELFWISE_FUSION_LEXICAL_WEIGHT", DEFAULT_LEXICAL_WEIGHT, environ, minimum=0.0),
            multilingual_weight=env_float("SHELFWISE_FUSION_MULTILINGUAL_WEIGHT", 1.0, environ, minimum=0.0),
        )

    def contribution(self, lexical_rank: int, dense_rank: int) -> float:
        """Fused score from 1-based ranks; 0 means "not in that list"."""
        return (self.lexical_weight / (self.k + lexical_rank) if lexical_rank else 0.0) + (
            self.dense_weight / (self.k + dense_rank) if dense_rank else 0.0
        )

    def scaled(self, lexical_rank: int, dense_rank: int) -> float:
        """`contribution` of the lexical and English lists, rescaled so that rank 1 in both is
        REFERENCE_MAX."""
        best = (self.lexical_weight + self.dense_weight) / (self.k + 1)
        return self.contribution(lexical_rank, dense_rank) * (REFERENCE_MAX / best) if best > 0 else 0.0

    def scaled_ranks(
        self, lexical_ranks: np.ndarray, dense_ranks: np.ndarray, multilingual_ranks: np.ndarray | None = None
    ) -> np.ndarray:
        """Fused scores of many candidates from their 1-based ranks (0 = not in that list),
        rescaled so that rank 1 in every list fused is REFERENCE_MAX. `multilingual_ranks`:
        None when there is no multilingual list (then two lists are fused, as `scaled` does)."""
        lists = [(self.lexical_weight, lexical_ranks), (self.dense_weight, dense_ranks)]
        if multilingual_ranks is not None:
            lists.append((self.multilingual_weight, multilingual_ranks))
        contribution = np.zeros(len(lexical_ranks), dtype=np.float64)
        with np.errstate(divide="ignore"):  # rank 0 with k = 0: the term is dropped anyway
            for weight, ranks in lists:
                ranks = np.asarray(ranks, dtype=np.float64)
                contribution += np.where(ranks > 0, weight / (self.k + ranks), 0.0)
        best = sum(weight for weight, _ in lists) / (self.k + 1)
        return contribution * (REFERENCE_MAX / best) if best > 0 else np.zeros_like(contribution)

    def fuse_rankings(
        self,
        lexical: Sequence[tuple[str, float]],
        dense: Sequence[tuple[str, float]],
        multilingual: Sequence[tuple[str, float]] | None = None,
    ) -> list[tuple[str, float]]:
        """(id, score) lists, best first → one fused list, best first (ties: English dense score)."""
        lists = [(self.lexical_weight, lexical), (self.dense_weight, dense)]
        if multilingual is not None:
            lists.append((self.multilingual_weight, multilingual))
        ranks = [(weight, {doc: rank for rank, (doc, _) in enumerate(items, start=1)}) for weight, items in lists]
        dense_score = dict(dense)
        docs = dict.fromkeys(doc for _, items in lists for doc, _ in items)
        fused = [
            (doc, sum(weight / (self.k + rank[doc]) for weight, rank in ranks if doc in rank))
            for doc in docs
        ]
        fused.sort(key=lambda item: (-item[1], -dense_score.get(item[0], float("-inf"))))
        return fused

    def describe(self) -> str:
        return (f"RRF k={self.k:g}, lexical weight {self.lexical_weight:g}, dense weight {self.dense_weight:g}, "
                f"multilingual weight {self.multilingual_weight:g}")

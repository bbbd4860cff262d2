"""The stage policies experiment arms select: retrieval modes (hybrid / lexical / dense) and
ranking policies (deployed scorer / formula / retrieval order / pinned CTR head version)."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.errors import InvalidArgument, NotFound
from services.ranking.features import QueryPreferences
from services.ranking.ranker import FORMULA, MODEL, RETRIEVAL_ORDER, RETRIEVAL_ORDER_VERSION, Ranker, ScoringPolicy
from services.ranking.scorers import FeatureScorer
from services.retrieval.filters import CandidateFilters
from services.retrieval.retriever import DENSE, LEXICAL, TextQueryOptions
from tests.support.ranking import popularity, varied_candidates
from tests.support.retrieval import index  # noqa: F401  (the retriever tests' catalogue fixture)


async def test_lexical_mode_never_encodes_the_query_and_returns_bm25_order(index):
    catalog, encoder = index
    result = await catalog.retrieve("red wine", CandidateFilters(), 10, options=TextQueryOptions(mode=LEXICAL))
    assert encoder.calls == []
    assert result.degraded == ()  # chosen, not a failure
    assert result.candidates and all(c.dense_score == 0.0 and c.dense_rank == 0 for c in result.candidates)
    assert [c.lexical_rank for c in result.candidates] == list(range(1, len(result.candidates) + 1))


async def test_dense_mode_has_no_lexical_candidates(index):
    catalog, _ = index
    result = await catalog.retrieve("red wine", CandidateFilters(), 10, options=TextQueryOptions(mode=DENSE))
    assert result.candidates and all(c.lexical_rank == 0 and c.lexical_score == 0.0 for c in result.candidates)
    assert [c.dense_rank for c in result.candidates] == list(range(1, len(result.candidates) + 1))


async def test_dense_mode_without_the_encoder_falls_back_to_bm25_and_says_so(index):
    catalog, encoder = index
    encoder.down = True
    result = await catalog.retrieve("red wine", CandidateFilters(), 10, options=TextQueryOptions(mode=DENSE))
    assert result.degraded == ("dense",) and result.candidates


async def test_an_unknown_retrieval_mode_is_invalid(index):
    catalog, _ = index
    with pytest.raises(InvalidArgument, match="mode"):
        await catalog.retrieve("red wine", CandidateFilters(), 10, options=TextQueryOptions(mode="sql"))


class ConstantScorer:
    """A "deployed model" whose order is the reverse of the input, so policies are told apart."""

    def __init__(self, version: str):
        self.version = version

    async def score(self, features: np.ndarray) -> np.ndarray:
        return np.arange(len(features), dtype=np.float32)

    async def contributions(self, features: np.ndarray) -> np.ndarray:
        return np.zeros_like(features)


async def test_retrieval_order_policy_keeps_the_candidates_order_and_pages():
    candidates = varied_candidates(12)
    ranker = Ranker(ConstantScorer("ctr_head/1"), popularity())
    ranking = await ranker.rank(candidates, QueryPreferences(), 5, 4, scoring=ScoringPolicy(policy=RETRIEVAL_ORDER))
    assert [i.product_id for i in ranking.items] == [c.product_id for c in candidates[5:9]]
    assert [i.position for i in ranking.items] == [6, 7, 8, 9]
    assert ranking.model_version == RETRIEVAL_ORDER_VERSION and ranking.total == 12
    assert all(i.reasons for i in ranking.items)  # features still reported for logging


async def test_formula_policy_ignores_the_deployed_model():
    candidates = varied_candidates(12)
    ranker = Ranker(ConstantScorer("ctr_head/1"), popularity())
    formula = await ranker.rank(candidates, QueryPreferences(), 0, 12, scoring=ScoringPolicy(policy=FORMULA))
    reference = await Ranker(FeatureScorer(), popularity()).rank(candidates, QueryPreferences(), 0, 12)
    assert formula.model_version == FeatureScorer.version
    assert [i.product_id for i in formula.items] == [i.product_id for i in reference.items]
    deployed = await ranker.rank(candidates, QueryPreferences(), 0, 12, scoring=ScoringPolicy(policy=MODEL))
    assert deployed.model_version == "ctr_head/1"
    assert [i.product_id for i in deployed.items] == [c.product_id for c in reversed(candidates)]


async def test_a_pinned_ctr_head_version_ranks_with_that_version():
    asked = []

    def versions(version: int):
        asked.append(version)
        if version != 3:
            raise NotFound(f"ctr_head_version: ctr_head version {version} is not in the model repository")
        return ConstantScorer("ctr_head/3")

    ranker = Ranker(FeatureScorer(), popularity(), versions=versions)
    ranking = await ranker.rank(
        varied_candidates(5), QueryPreferences(), 0, 5, scoring=ScoringPolicy(policy=MODEL, ctr_head_version=3)
    )
    assert ranking.model_version == "ctr_head/3" and asked == [3]
    with pytest.raises(NotFound, match="ctr_head_version"):
        await ranker.rank(varied_candidates(5), QueryPreferences(), 0, 5, scoring=ScoringPolicy(ctr_head_version=9))
    with pytest.raises(InvalidArgument, match="ctr_head_version"):
        await ranker.rank(
            varied_candidates(5), QueryPreferences(), 0, 5, scoring=ScoringPolicy(policy=FORMULA, ctr_head_version=3)
        )
    with pytest.raises(InvalidArgument, match="policy"):
        await ranker.rank(varied_candidates(5), QueryPreferences(), 0, 5, scoring=ScoringPolicy(policy="magic"))

"""Relevance ranking: the category vote, the relevance features, and the ranker ordering search
results by a real ONNX relevance ranker (trained here on synthetic judgments through
`training.search.train_ranker`) with the documented adjustments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from services.common.errors import Unavailable
from services.common.inference import EmbeddedOnnxRuntime
from services.ranking.features import QueryPreferences, RankingCandidate
from services.common.popularity import PopularityCache
from services.ranking.ranker import AdjustmentWeights, Ranker, RankingQuery, cheapness
from services.ranking.relevance import RELEVANCE_FEATURES, category_vote, neutral_row, relevance_matrix
from services.ranking.scorers import OnnxRelevanceRanker, create_relevance_ranker, create_scorer

COLUMN = {name: index for index, name in enumerate(RELEVANCE_FEATURES)}


def candidate(product_id: str, dense: float = 0.0, category: str = "", **fields) -> RankingCandidate:
    defaults = dict(brand="", attributes={}, lexical_score=0.0, fused_score=0.0)
    defaults.update(fields)
    return RankingCandidate(product_id, defaults.pop("brand"), category, defaults.pop("attributes"),
                            defaults.pop("lexical_score"), dense, defaults.pop("fused_score"), **defaults)


# --- the category vote -------------------------------------------------------------------------


def test_the_category_vote_weights_the_nearest_products_by_closeness() -> None:
    vote = category_vote(["Tea", "Tea", "Coffee", "Wine"], np.array([0.80, 0.75, 0.79, 0.10]), voters=3, temperature=0.05)
    weights = {"Tea": math.exp(0) + math.exp(-0.05 / 0.05), "Coffee": math.exp(-0.01 / 0.05)}
    total = sum(weights.values())
    assert vote.shares == pytest.approx({name: w / total for name, w in weights.items()})
    assert vote.top(1)[0][0] == "Tea" and sum(vote.shares.values()) == pytest.approx(1.0)


def test_an_unweighted_vote_counts_only_entries_that_scored() -> None:
    vote = category_vote(["Tea", "Coffee", "Wine"], np.array([3.0, 0.0, 1.0]), voters=30)
    assert vote.shares == {"Tea": 0.5, "Wine": 0.5}
    assert category_vote(["Tea"], np.array([0.0]), voters=30).shares == {}


def test_products_without_a_category_do_not_vote_for_one() -> None:
    vote = category_vote(["", "Tea"], np.array([0.9, 0.5]), voters=2, temperature=0.05)
    assert set(vote.shares) == {"Tea"}


# --- the relevance features ----------------------------------------------------------------------


def test_relevance_features_follow_their_definitions() -> None:
    found = [
        candidate("a", 0.9, "Tea", multilingual_score=0.5, lexical_score=4.0, lexical_coverage=0.8,
                  lexical_rank=1, dense_rank=1, multilingual_rank=2, title="green tea leaves"),
        candidate("b", 0.7, "Coffee", multilingual_score=0.6, dense_rank=2, multilingual_rank=1, title="dark roast"),
        candidate("c", 0.2, "Tea", lexical_score=2.0, lexical_coverage=0.4, lexical_rank=2, title="tea"),
    ]
    features, vote = relevance_matrix(found, QueryPreferences(categories=("tea",)), translated=True)
    assert features.shape == (3, len(RELEVANCE_FEATURES)) and features.dtype == np.float32
    column = lambda name: features[:, COLUMN[name]].tolist()  # noqa: E731
    assert column("dense_cosine") == pytest.approx([0.9, 0.7, 0.2])
    assert column("multilingual_cosine") == pytest.approx([0.5, 0.6, 0.0])
    assert column("bm25_coverage") == pytest.approx([0.8, 0.0, 0.4])
    cap = math.log(4)  # not in the list: log(candidates + 1)
    assert column("lexical_rank") == pytest.approx([0.0, cap, math.log(2)])
    assert column("multilingual_rank") == pytest.approx([math.log(2), 0.0, cap])
    assert column("category_match") == [1.0, 0.0, 1.0]
    assert column("translated") == [1.0, 1.0, 1.0]
    assert column("dense_gap") == pytest.approx([0.0, 0.2, 0.7])
    assert column("title_words") == [3.0, 2.0, 1.0]
    assert column("category_share") == pytest.approx([2 / 3, 1 / 3, 2 / 3])
    assert column("lexical_category_vote") == [1.0, 0.0, 1.0]  # both BM25 matches are teas
    expected_vote = category_vote(["Tea", "Coffee", "Tea"], np.array([0.9, 0.7, 0.2]), 50, 0.05)
    assert column("category_vote") == pytest.approx([expected_vote.shares["Tea"], expected_vote.shares["Coffee"],
                                                     expected_vote.shares["Tea"]])
    assert vote == expected_vote
    assert neutral_row(3)[COLUMN["dense_rank"]] == pytest.approx(cap) and neutral_row(3)[COLUMN["dense_cosine"]] == 0


def test_cheapness_is_the_price_rank_from_dearest_to_cheapest() -> None:
    found = [candidate(str(i), price=price) for i, price in enumerate([20.0, 5.0, 20.0, 12.0])]
    assert cheapness(found).tolist() == [0.0, 1.0, 0.0, 0.5]
    assert cheapness([candidate("a", price=3.0), candidate("b", price=3.0)]).tolist() == [0.0, 0.0]


# --- the ranker with a real relevance model ------------------------------------------------------


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    """A relevance_ranker version trained on synthetic judgments where relevance follows the
    English cosine, through the real training and export code."""
    from training.search.train_ranker import Calibration, JudgedQuery, RankerSettings, calibrate, fit, ranker_graph

    rng = np.random.default_rng(1)
    queries = []
    for q in range(60):
        features = rng.random((30, len(RELEVANCE_FEATURES)))
        grades = (features[:, COLUMN["dense_cosine"]] > 0.7).astype(np.int32)
        queries.append(JudgedQuery(str(q), str(q), [], features, grades))
    settings = RankerSettings(n_estimators=40, min_child_samples=10)
    booster = fit(queries, settings)
    calibration = calibrate([booster.predict(q.features, raw_score=True) for q in queries], queries)
    assert isinstance(calibration, Calibration) and 0 < calibration.threshold < 1
    root = tmp_path_factory.mktemp("repository")
    version = root / "relevance_ranker" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(ranker_graph(booster, calibration).SerializeToString())
    (version / "metadata.json").write_text(json.dumps(
        {"features": list(RELEVANCE_FEATURES), "threshold": calibration.threshold}
    ))
    return root


def popular(values=None) -> PopularityCache:
    async def fetch():
        return values or {}

    cache = PopularityCache(fetch, refresh_seconds=60)
    cache.values = dict(values or {})
    return cache


def ranker(repository, weights=AdjustmentWeights(), values=None) -> Ranker:
    backend = EmbeddedOnnxRuntime(repository)
    return Ranker(create_scorer(None), popular(values), relevance=create_relevance_ranker(backend), adjustments=weights)


QUERY = RankingQuery(text="green tea")


async def test_search_results_are_ordered_by_relevance_and_relevant_ones_counted(repository) -> None:
    found = [candidate(f"p{i}", dense) for i, dense in enumerate([0.1, 0.95, 0.4, 0.85, 0.2])]
    ranking = await ranker(repository).rank(found, QueryPreferences(), 0, 5, query=QUERY)
    assert [item.product_id for item in ranking.items][:2] == ["p1", "p3"]
    assert ranking.model_version == "relevance_ranker/1"
    assert ranking.relevant == 2
    reasons = {name: (value, part) for name, value, part in ranking.items[0].reasons}
    probability, logit = reasons["relevance_probability"]
    assert probability == pytest.approx(1 / (1 + math.exp(-logit))) and probability > 0.5
    assert reasons["dense_cosine"][0] == pytest.approx(0.95) and reasons["dense_cosine"][1] > 0


async def test_a_query_that_nothing_matches_has_no_relevant_candidate(repository) -> None:
    found = [candidate(f"p{i}", dense) for i, dense in enumerate([0.1, 0.3, 0.2])]
    ranking = await ranker(repository).rank(found, QueryPreferences(), 0, 3, query=QUERY)
    assert ranking.relevant == 0 and len(ranking.items) == 3


async def test_a_named_attribute_and_popularity_adjust_relevance_by_their_weights(repository) -> None:
    red = candidate("red", 0.8, attributes={"color": "red"})
    blue = candidate("blue", 0.8, attributes={"color": "blue"})
    wanted = QueryPreferences(attributes={"color": "red"})
    assert [i.product_id for i in (await ranker(repository).rank([blue, red], wanted, 0, 2, query=QUERY)).items] == [
        "red", "blue"]
    off = AdjustmentWeights(attribute_match=0.0)
    assert [i.product_id for i in (await ranker(repository, off).rank([blue, red], wanted, 0, 2, query=QUERY)).items] == [
        "blue", "red"]  # equal relevance: retrieval's order
    ranked = (await ranker(repository, values={"blue": 9.0}).rank([blue, red], QueryPreferences(), 0, 2, query=QUERY)).items
    scores = {i.product_id: i.score for i in ranked}
    relevant = dict(ranked[0].reasons and [(n, v) for n, v, _ in ranked[0].reasons])["relevance_probability"]
    # Engagement counts among the relevant: its weight times the probability of relevance.
    assert scores["blue"] - scores["red"] == pytest.approx(AdjustmentWeights().popularity * relevant, abs=1e-5)


async def test_a_popular_product_does_not_climb_into_a_search_it_does_not_answer(repository) -> None:
    answer, popular = candidate("answer", 0.9), candidate("popular", 0.3)
    ranking = await ranker(repository, AdjustmentWeights(popularity=5.0), values={"popular": 100.0}).rank(
        [popular, answer], QueryPreferences(), 0, 2, query=QUERY)
    assert [i.product_id for i in ranking.items] == ["answer", "popular"]
    part = {n: c for n, _, c in ranking.items[1].reasons}["popularity"]
    assert 0 < part < 5.0 * 0.5  # at full weight it would have been 5 log-odds


async def test_a_query_asking_for_something_cheap_lifts_cheaper_relevant_products(repository) -> None:
    dear, cheap = candidate("dear", 0.9, price=80.0), candidate("cheap", 0.9, price=8.0)
    plain = await ranker(repository).rank([dear, cheap], QueryPreferences(), 0, 2, query=QUERY)
    assert [i.product_id for i in plain.items] == ["dear", "cheap"]
    asked = await ranker(repository).rank(
        [dear, cheap], QueryPreferences(), 0, 2, query=RankingQuery(text="cheap tea", prefers_low_price=True)
    )
    assert [i.product_id for i in asked.items] == ["cheap", "dear"]


async def test_without_a_query_the_relevance_ranker_stays_out(repository) -> None:
    found = [candidate("a", 0.1), candidate("b", 0.9)]
    ranking = await ranker(repository).rank(found, QueryPreferences(), 0, 2)
    assert ranking.model_version == "feature-scoring/1" and ranking.relevant is None and ranking.query_categories == ()


async def test_an_unreachable_relevance_ranker_degrades_to_the_formula(repository) -> None:
    relevance = create_relevance_ranker(EmbeddedOnnxRuntime(repository))

    async def down(features):
        raise Unavailable("triton relevance_ranker: unreachable")

    relevance.score = down
    failing = Ranker(create_scorer(None), popular(), relevance=relevance)
    ranking = await failing.rank([candidate("a", 0.1), candidate("b", 0.9)], QueryPreferences(), 0, 2, query=QUERY)
    assert ranking.degraded == ("relevance_ranker",) and ranking.model_version == "feature-scoring/1"
    assert ranking.items[0].product_id == "b"


def test_a_ranker_trained_on_other_features_is_refused_with_what_to_do(tmp_path, repository) -> None:
    version = tmp_path / "relevance_ranker" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes((repository / "relevance_ranker" / "1" / "model.onnx").read_bytes())
    (version / "metadata.json").write_text(json.dumps({"features": ["dense_cosine"], "threshold": 0.5}))
    with pytest.raises(ValueError, match="shelfwise train ranker"):
        OnnxRelevanceRanker(EmbeddedOnnxRuntime(tmp_path))


async def test_the_query_categories_are_the_vote_of_the_nearest_candidates(repository) -> None:
    found = [candidate("a", 0.9, "Tea"), candidate("b", 0.88, "Tea"), candidate("c", 0.5, "Wine")]
    ranking = await ranker(repository).rank(found, QueryPreferences(), 0, 3, query=QUERY)
    assert [category for category, _ in ranking.query_categories] == ["Tea"]  # Wine's share is under 0.1

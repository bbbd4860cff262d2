"""Unit tests of services.ranking: features, scorers (feature weights and a real ONNX CTR head),
the ranker's validation, ordering and paging, and the popularity cache."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from services.common.errors import InvalidArgument
from services.common.inference import EmbeddedOnnxRuntime
from services.ranking.features import FEATURE_NAMES, RRF_MAX, QueryPreferences, RankingCandidate, feature_matrix
from services.common.popularity import PopularityCache
from services.ranking.ranker import MAX_CANDIDATES, Ranker, ScoringPolicy
from services.ranking.scorers import FEATURE_WEIGHTS, FeatureScorer, OnnxCtrHead, create_scorer
from tests.support.ranking import candidate, popularity, varied_candidates

COLUMN = {name: index for index, name in enumerate(FEATURE_NAMES)}


# --- features --------------------------------------------------------------------------------


def test_feature_matrix_shape_and_dtype() -> None:
    features = feature_matrix(varied_candidates(5), QueryPreferences(), {})
    assert features.shape == (5, len(FEATURE_NAMES))
    assert features.dtype == np.float32


def test_feature_matrix_of_no_candidates_is_empty() -> None:
    assert feature_matrix([], QueryPreferences(), {"a": 1.0}).shape == (0, len(FEATURE_NAMES))


def test_feature_values_are_in_unit_interval() -> None:
    rng = np.random.default_rng(1)
    candidates = [
        candidate(
            f"p{i}",
            lexical=float(rng.uniform(0, 50)),
            dense=float(rng.uniform(-1.5, 1.5)),
            fused=float(rng.uniform(0, 2 * RRF_MAX)),
            brand=rng.choice(["Stride", "Acme", ""]),
            category=rng.choice(["Shoes", "Hats"]),
            attributes={"color": rng.choice(["red", "blue"]), "size": rng.choice(["9", "10"])},
        )
        for i in range(200)
    ]
    preferences = QueryPreferences(("stride",), ("shoes",), {"color": "red", "size": "9"})
    engagement = {f"p{i}": float(rng.uniform(0, 1000)) for i in range(0, 300, 2)}
    features = feature_matrix(candidates, preferences, engagement)
    assert np.all(features >= 0.0) and np.all(features <= 1.0)


def test_bm25_feature_is_one_for_best_lexical_candidate_and_relative_for_others() -> None:
    features = feature_matrix(
        [candidate("a", lexical=4.0), candidate("b", lexical=8.0), candidate("c", lexical=0.0)], QueryPreferences(), {}
    )
    assert features[:, COLUMN["bm25"]].tolist() == [0.5, 1.0, 0.0]


def test_bm25_feature_is_zero_when_no_candidate_matched_lexically() -> None:
    features = feature_matrix([candidate("a"), candidate("b")], QueryPreferences(), {})
    assert features[:, COLUMN["bm25"]].tolist() == [0.0, 0.0]


def test_dense_similarity_is_clipped_to_unit_interval() -> None:
    features = feature_matrix(
        [candidate("a", dense=-0.3), candidate("b", dense=0.25), candidate("c", dense=1.2)], QueryPreferences(), {}
    )
    assert features[:, COLUMN["dense_similarity"]].tolist() == [0.0, 0.25, 1.0]


def test_fusion_is_scaled_by_rrf_max() -> None:
    features = feature_matrix([candidate("a", fused=RRF_MAX), candidate("b", fused=RRF_MAX / 4)], QueryPreferences(), {})
    np.testing.assert_allclose(features[:, COLUMN["fusion"]], [1.0, 0.25], rtol=1e-6)


def test_brand_and_category_matches_are_case_insensitive() -> None:
    preferences = QueryPreferences(brands=("STRIDE",), categories=("running shoes",))
    features = feature_matrix(
        [
            candidate("a", brand="Stride", category="Running Shoes"),
            candidate("b", brand="stride", category="Hats"),
            candidate("c", brand="Acme", category="RUNNING SHOES"),
        ],
        preferences,
        {},
    )
    assert features[:, COLUMN["brand_match"]].tolist() == [1.0, 1.0, 0.0]
    assert features[:, COLUMN["category_match"]].tolist() == [1.0, 0.0, 1.0]


def test_attribute_match_is_case_insensitive_share_of_wanted_values() -> None:
    preferences = QueryPreferences(attributes={"Color": "RED", "size": "9"})
    features = feature_matrix(
        [
            candidate("a", attributes={"color": "Red", "SIZE": "9"}),
            candidate("b", attributes={"COLOR": "red", "size": "10"}),
            candidate("c", attributes={"material": "mesh"}),
        ],
        preferences,
        {},
    )
    assert features[:, COLUMN["attribute_match"]].tolist() == [1.0, 0.5, 0.0]


def test_no_preferences_give_zero_match_features() -> None:
    features = feature_matrix([candidate("a", brand="Stride", category="Shoes", attributes={"color": "red"})], QueryPreferences(), {})
    assert features[0, COLUMN["brand_match"]] == 0.0
    assert features[0, COLUMN["category_match"]] == 0.0
    assert features[0, COLUMN["attribute_match"]] == 0.0


def test_popularity_is_log_scaled_against_best_engagement() -> None:
    features = feature_matrix(
        [candidate("a"), candidate("b"), candidate("c")], QueryPreferences(), {"a": 99.0, "b": 9.0, "z": 999.0}
    )
    expected = [math.log1p(99) / math.log1p(999), math.log1p(9) / math.log1p(999), 0.0]
    np.testing.assert_allclose(features[:, COLUMN["popularity"]], expected, rtol=1e-6)


# --- FeatureScorer ---------------------------------------------------------------------------


def test_feature_weights_cover_every_feature_and_non_personal_ones_sum_to_one() -> None:
    assert set(FEATURE_WEIGHTS) == set(FEATURE_NAMES)
    non_personal = {name: weight for name, weight in FEATURE_WEIGHTS.items() if name != "personal_affinity"}
    assert math.isclose(sum(non_personal.values()), 1.0)


async def test_personal_affinity_breaks_ties_towards_the_shoppers_taste_and_is_clipped() -> None:
    def candidate(product_id: str, personal: float) -> RankingCandidate:
        return RankingCandidate(product_id, "", "", {}, 0.0, 0.5, 0.01, personal_score=personal)

    candidates = [candidate("far", 0.1), candidate("near", 0.9), candidate("opposite", -0.4)]
    features = feature_matrix(candidates, QueryPreferences(), {})
    column = features[:, COLUMN["personal_affinity"]]
    np.testing.assert_allclose(column, [0.1, 0.9, 0.0], rtol=1e-6)
    scores = await FeatureScorer().score(features)
    assert [c.product_id for _, c in sorted(zip(-scores, candidates), key=lambda pair: pair[0])] == [
        "near", "far", "opposite",
    ]


async def test_feature_scorer_contributions_sum_to_score() -> None:
    features = np.random.default_rng(2).random((20, len(FEATURE_NAMES))).astype(np.float32)
    scorer = FeatureScorer()
    scores = await scorer.score(features)
    contributions = await scorer.contributions(features)
    assert contributions.shape == features.shape
    np.testing.assert_allclose(contributions.sum(axis=1), scores, rtol=1e-5)


async def test_feature_scorer_gives_one_for_all_non_personal_features_one() -> None:
    features = np.ones((1, len(FEATURE_NAMES)), dtype=np.float32)
    features[0, COLUMN["personal_affinity"]] = 0.0
    scores = await FeatureScorer().score(features)
    assert scores[0] == pytest.approx(1.0, abs=1e-6)


def test_feature_scorer_version() -> None:
    assert FeatureScorer().version == "feature-scoring/1"


# --- Ranker: validation ----------------------------------------------------------------------


async def test_rank_rejects_negative_offset() -> None:
    with pytest.raises(InvalidArgument) as caught:
        await Ranker(FeatureScorer(), popularity()).rank(varied_candidates(3), QueryPreferences(), offset=-1, limit=3)
    assert caught.value.field == "offset"


@pytest.mark.parametrize("limit", [0, -1, 101])
async def test_rank_rejects_limit_outside_1_to_100(limit) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await Ranker(FeatureScorer(), popularity()).rank(varied_candidates(3), QueryPreferences(), offset=0, limit=limit)
    assert caught.value.field == "limit"


async def test_rank_rejects_too_many_candidates() -> None:
    candidates = [candidate(f"p{i}") for i in range(MAX_CANDIDATES + 1)]
    with pytest.raises(InvalidArgument) as caught:
        await Ranker(FeatureScorer(), popularity()).rank(candidates, QueryPreferences(), offset=0, limit=10)
    assert caught.value.field == "candidates"


async def test_rank_accepts_limit_100_and_max_candidates() -> None:
    candidates = [candidate(f"p{i}") for i in range(MAX_CANDIDATES)]
    ranking = await Ranker(FeatureScorer(), popularity()).rank(candidates, QueryPreferences(), offset=0, limit=100)
    assert len(ranking.items) == 100 and ranking.total == MAX_CANDIDATES


# --- Ranker: order and pages -----------------------------------------------------------------


async def test_rank_orders_by_score_descending() -> None:
    ranking = await Ranker(FeatureScorer(), popularity()).rank(varied_candidates(), QueryPreferences(), offset=0, limit=12)
    scores = [item.score for item in ranking.items]
    assert scores == sorted(scores, reverse=True)
    assert ranking.model_version == "feature-scoring/1"


async def test_rank_drops_duplicate_product_ids_keeping_the_first() -> None:
    candidates = [candidate("a", dense=0.1), candidate("b", dense=0.5), candidate("a", dense=0.9)]
    ranking = await Ranker(FeatureScorer(), popularity()).rank(candidates, QueryPreferences(), offset=0, limit=10)
    assert [item.product_id for item in ranking.items] == ["b", "a"]
    assert ranking.total == 2


async def test_rank_keeps_retrieval_order_on_ties() -> None:
    candidates = [candidate(f"p{i}", dense=0.5) for i in range(30)]
    ranking = await Ranker(FeatureScorer(), popularity()).rank(candidates, QueryPreferences(), offset=0, limit=30)
    assert [item.product_id for item in ranking.items] == [f"p{i}" for i in range(30)]


async def test_rank_pages_are_consistent_and_positions_continue() -> None:
    candidates = varied_candidates(8) + [candidate(f"tie{i}", dense=0.3) for i in range(6)]
    ranker = Ranker(FeatureScorer(), popularity({"p1": 5.0, "tie3": 2.0}))
    first = await ranker.rank(candidates, QueryPreferences(), offset=0, limit=3)
    second = await ranker.rank(candidates, QueryPreferences(), offset=3, limit=3)
    whole = await ranker.rank(candidates, QueryPreferences(), offset=0, limit=6)
    assert [(i.product_id, i.position) for i in first.items + second.items] == [
        (i.product_id, i.position) for i in whole.items
    ]
    assert [i.position for i in whole.items] == [1, 2, 3, 4, 5, 6]
    assert [i.position for i in second.items] == [4, 5, 6]


async def test_rank_page_past_the_end_is_empty_with_total() -> None:
    ranking = await Ranker(FeatureScorer(), popularity()).rank(varied_candidates(5), QueryPreferences(), offset=5, limit=3)
    assert ranking.items == [] and ranking.total == 5


async def test_rank_last_page_is_partial() -> None:
    ranking = await Ranker(FeatureScorer(), popularity()).rank(varied_candidates(5), QueryPreferences(), offset=3, limit=3)
    assert [i.position for i in ranking.items] == [4, 5]


async def test_rank_reasons_list_nonzero_features_with_contributions() -> None:
    candidates = [candidate("a", lexical=2.0, dense=0.5, brand="Stride")]
    ranking = await Ranker(FeatureScorer(), popularity()).rank(candidates, QueryPreferences(brands=("stride",)), 0, 10)
    reasons = {name: (value, contribution) for name, value, contribution in ranking.items[0].reasons}
    assert set(reasons) == {"dense_similarity", "bm25", "brand_match"}
    assert reasons["dense_similarity"] == pytest.approx((0.5, 0.5 * FEATURE_WEIGHTS["dense_similarity"]))
    assert reasons["bm25"] == pytest.approx((1.0, FEATURE_WEIGHTS["bm25"]))
    assert sum(c for _, c in reasons.values()) == pytest.approx(ranking.items[0].score, rel=1e-5)


async def test_more_engagement_ranks_higher_when_text_features_tie() -> None:
    candidates = [candidate("quiet", lexical=3.0, dense=0.6), candidate("loved", lexical=3.0, dense=0.6)]
    ranker = Ranker(FeatureScorer(), popularity({"loved": 50.0, "quiet": 2.0}))
    ranking = await ranker.rank(candidates, QueryPreferences(), offset=0, limit=2)
    assert [item.product_id for item in ranking.items] == ["loved", "quiet"]


# --- PopularityCache -------------------------------------------------------------------------


async def test_popularity_refresh_loads_values() -> None:
    async def fetch():
        return {"a": 3.0}

    cache = PopularityCache(fetch, refresh_seconds=60)
    assert cache.values == {} and cache.refreshed_at is None
    await cache.refresh()
    assert cache.values == {"a": 3.0}
    assert cache.refreshed_at is not None


async def test_popularity_refresh_keeps_old_values_when_fetch_raises() -> None:
    answers = [{"a": 3.0, "b": 1.0}, RuntimeError("events down")]

    async def fetch():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    cache = PopularityCache(fetch, refresh_seconds=60)
    await cache.refresh()
    refreshed_at = cache.refreshed_at
    await cache.refresh()  # must not raise
    assert cache.values == {"a": 3.0, "b": 1.0}
    assert cache.refreshed_at == refreshed_at


async def test_popularity_start_and_stop_run_the_refresh_loop() -> None:
    calls = 0

    async def fetch():
        nonlocal calls
        calls += 1
        return {"a": float(calls)}

    cache = PopularityCache(fetch, refresh_seconds=0.001)
    cache.start()
    for _ in range(100):
        if calls >= 2:
            break
        await asyncio.sleep(0.005)
    await cache.stop()
    assert calls >= 2
    assert cache.values["a"] >= 1.0


# --- ONNX CTR head ---------------------------------------------------------------------------

CTR_WEIGHTS = np.array([1.5, -0.7, 0.9, 0.4, -1.2, 2.0, 0.3, 0.8], dtype=np.float32)
CTR_BIAS = np.float32(-0.6)


def write_ctr_head(repository) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w"], ["logit_raw"]),
            helper.make_node("Add", ["logit_raw", "b"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["ctr"]),
        ],
        "ctr_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", len(FEATURE_NAMES)])],
        [helper.make_tensor_value_info("ctr", TensorProto.FLOAT, ["N", 1])],
        initializer=[
            numpy_helper.from_array(CTR_WEIGHTS.reshape(-1, 1), "w"),
            numpy_helper.from_array(np.array([CTR_BIAS], dtype=np.float32), "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    folder = repository / "ctr_head" / "1"
    folder.mkdir(parents=True)
    onnx.save(model, str(folder / "model.onnx"))


def numpy_ctr(features: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-(features.astype(np.float64) @ CTR_WEIGHTS + CTR_BIAS)))


def test_create_scorer_without_backend_is_feature_scorer() -> None:
    assert isinstance(create_scorer(None), FeatureScorer)


def test_create_scorer_for_empty_repository_is_feature_scorer(tmp_path) -> None:
    assert isinstance(create_scorer(EmbeddedOnnxRuntime(tmp_path)), FeatureScorer)


async def test_onnx_ctr_head_scores_match_numpy_sigmoid(tmp_path) -> None:
    write_ctr_head(tmp_path)
    scorer = create_scorer(EmbeddedOnnxRuntime(tmp_path))
    assert isinstance(scorer, OnnxCtrHead)
    assert scorer.version == "ctr_head/1"
    features = np.random.default_rng(3).random((16, len(FEATURE_NAMES))).astype(np.float32)
    scores = await scorer.score(features)
    assert scores.shape == (16,)
    np.testing.assert_allclose(scores, numpy_ctr(features), atol=1e-5)


async def test_onnx_ctr_head_scores_no_rows_without_calling_the_model(tmp_path) -> None:
    write_ctr_head(tmp_path)
    scorer = create_scorer(EmbeddedOnnxRuntime(tmp_path))
    assert (await scorer.score(np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32))).shape == (0,)


async def test_onnx_ctr_head_contributions_are_occlusion_differences(tmp_path) -> None:
    write_ctr_head(tmp_path)
    scorer = create_scorer(EmbeddedOnnxRuntime(tmp_path))
    features = np.random.default_rng(4).random((5, len(FEATURE_NAMES))).astype(np.float32)
    contributions = await scorer.contributions(features)
    assert contributions.shape == features.shape
    base = numpy_ctr(features)
    for column in range(len(FEATURE_NAMES)):
        zeroed = features.copy()
        zeroed[:, column] = 0.0
        np.testing.assert_allclose(contributions[:, column], base - numpy_ctr(zeroed), atol=1e-5)


async def test_ranker_with_onnx_head_orders_by_ctr_and_reports_its_version(tmp_path) -> None:
    write_ctr_head(tmp_path)
    ranker = Ranker(create_scorer(EmbeddedOnnxRuntime(tmp_path)), popularity())
    ranking = await ranker.rank(varied_candidates(10), QueryPreferences(), offset=0, limit=10)
    assert ranking.model_version == "ctr_head/1"
    scores = [item.score for item in ranking.items]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 < s < 1.0 for s in scores)


def test_bm25_feature_uses_retrievals_coverage_when_given() -> None:
    """A weak single-word match stays weak even when it is the best lexical candidate."""
    weak = RankingCandidate("weak", "", "", {}, 5.0, 0.2, 0.0, lexical_coverage=0.3)
    strong = RankingCandidate("strong", "", "", {}, 4.0, 0.2, 0.0, lexical_coverage=1.4)
    features = feature_matrix([weak, strong], QueryPreferences(), {})
    assert features[:, COLUMN["bm25"]].tolist() == pytest.approx([0.3, 1.0])


def _feature_row_by_definition(candidate, preferences, popularity, best_bm25, has_coverage, best_engagement):
    """The features of one candidate, cell by cell, as their definitions read."""
    import math

    from services.ranking.features import RRF_MAX

    brands = {b.casefold() for b in preferences.brands}
    categories = {c.casefold() for c in preferences.categories}
    wanted = {k.casefold(): v.casefold() for k, v in preferences.attributes.items()}
    have = {k.casefold(): v.casefold() for k, v in candidate.attributes.items()}
    engagement = popularity.get(candidate.product_id, 0.0)
    return [
        min(max(candidate.dense_score, 0.0), 1.0),
        min(max(candidate.lexical_coverage, 0.0), 1.0) if has_coverage
        else (candidate.lexical_score / best_bm25 if best_bm25 > 0 else 0.0),
        min(candidate.fused_score / RRF_MAX, 1.0),
        1.0 if candidate.brand.casefold() in brands else 0.0,
        1.0 if candidate.category.casefold() in categories else 0.0,
        sum(have.get(k) == v for k, v in wanted.items()) / len(wanted) if wanted else 0.0,
        math.log1p(engagement) / math.log1p(best_engagement) if best_engagement > 0 else 0.0,
        min(max(candidate.personal_score, 0.0), 1.0),
    ]


@pytest.mark.parametrize("with_coverage", [True, False])
def test_feature_matrix_equals_each_features_definition(with_coverage):
    import random

    from services.ranking.features import QueryPreferences, RankingCandidate, feature_matrix

    rng = random.Random(5)
    candidates = [
        RankingCandidate(
            product_id=f"p{n}", brand=rng.choice(["Acme", "acme", "Zeta", ""]),
            category=rng.choice(["Tea", "Coffee", ""]), attributes={"color": rng.choice(["Red", "blue"])},
            lexical_score=rng.uniform(0, 12), dense_score=rng.uniform(-0.2, 1.1),
            fused_score=rng.uniform(0, 0.04), lexical_coverage=rng.uniform(-0.1, 1.2) if with_coverage else 0.0,
            personal_score=rng.uniform(-0.1, 1.1),
        )
        for n in range(60)
    ]
    preferences = QueryPreferences(brands=("ACME",), categories=("tea",), attributes={"Color": "red"})
    popularity = {f"p{n}": float(n % 7) for n in range(0, 60, 2)}
    matrix = feature_matrix(candidates, preferences, popularity)
    best_bm25 = max(c.lexical_score for c in candidates)
    expected = np.array(
        [_feature_row_by_definition(c, preferences, popularity, best_bm25, with_coverage, 6.0) for c in candidates],
        dtype=np.float32,
    )
    np.testing.assert_array_equal(matrix, expected)


# --- learned parts left out (experiments) ---------------------------------------------------------


async def test_excluded_learned_parts_keep_their_features_but_do_not_move_the_score() -> None:
    from services.ranking.ranker import POPULARITY

    same = [candidate("quiet", lexical=5.0, dense=0.5, fused=0.01), candidate("popular", lexical=5.0, dense=0.5, fused=0.01)]
    ranker = Ranker(FeatureScorer(), popularity({"popular": 50.0}))
    with_popularity = await ranker.rank(same, QueryPreferences(), 0, 2)
    assert [item.product_id for item in with_popularity.items] == ["popular", "quiet"]
    without = await ranker.rank(same, QueryPreferences(), 0, 2, scoring=ScoringPolicy(exclude=frozenset({POPULARITY})))
    assert [item.product_id for item in without.items] == ["quiet", "popular"]  # retrieval's order: a tie
    assert without.items[0].score == without.items[1].score
    reasons = {name: (value, part) for name, value, part in without.items[1].reasons}
    assert reasons["popularity"][0] == 1.0 and reasons["popularity"][1] == 0.0  # logged, but worth nothing


async def test_unknown_or_contradictory_exclusions_are_refused() -> None:
    ranker = Ranker(FeatureScorer(), popularity())
    with pytest.raises(InvalidArgument, match="unknown learned parts"):
        await ranker.rank(varied_candidates(3), QueryPreferences(), 0, 2, scoring=ScoringPolicy(exclude=frozenset({"recency"})))
    with pytest.raises(InvalidArgument, match="excludes"):
        await ranker.rank(varied_candidates(3), QueryPreferences(), 0, 2,
                          scoring=ScoringPolicy(ctr_head_version=2, exclude=frozenset({"ctr_head"})))

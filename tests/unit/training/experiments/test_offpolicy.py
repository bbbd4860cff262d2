"""Off-policy evaluation: on a synthetic log whose click model is known, IPS and SNIPS recover
the true CTR and CVR of a ranking the log never served, and the exploration propensities are
the exact Plackett-Luce marginals."""

import random

import numpy as np
import pytest

from services.gateway.exploration import ExplorationSettings, placement_probabilities, rank_weights
from training.experiments.offpolicy import ExploredSearch, TargetPolicy, estimate, target_policy

EXAMINATION = np.array([0.95 * 0.85**k for k in range(10)])


def synthetic_log(searches: int, seed: int = 1):
    """Pages of 10 products drawn from pools of 20. Click = examined (by position) x attracted
    (by the product's true relevance); purchase = half of the clicks on products of relevance
    > 0.5. The logging ranker orders the pool by a noisy relevance; exploration draws the shown
    page. Returns the log and the true CTR and CVR of the target that orders by the logged
    relevance_probability (which often shows products the logging ranker put below 10)."""
    rng = np.random.default_rng(seed)
    exploration = ExplorationSettings(share=1.0, temperature=3.0, depth=20)
    log, true_clicks, true_purchases = [], 0.0, 0.0
    for i in range(searches):
        relevance = rng.beta(1.2, 2.5, 20)
        pool = np.argsort(-(relevance + rng.normal(0, 0.25, 20)))  # logging ranker: rank -> product
        drawn = exploration.sample(20, 10, f"request-{i}")
        shown = pool[drawn.order]  # position -> product
        clicks = (rng.random(10) < EXAMINATION * relevance[shown]).astype(int)
        purchases = clicks * (relevance[shown] > 0.5) * (rng.random(10) < 0.5)
        log.append(ExploredSearch(
            f"user:{i // 2}", "control", tuple(f"p{p}" for p in shown), tuple(drawn.propensities),
            tuple(f"p{p}" for p in pool), tuple({"relevance_probability": float(relevance[p])} for p in pool),
            tuple(drawn.shown_probabilities),
            tuple(clicks.tolist()), tuple(purchases.astype(int).tolist()),
        ))
        target = relevance[np.argsort(-relevance)][:10]
        true_clicks += (EXAMINATION * target).sum()
        true_purchases += (EXAMINATION * target * (target > 0.5) * 0.5).sum()
    return log, true_clicks / searches / 10, true_purchases / searches


def test_propensities_are_the_exact_plackett_luce_marginals():
    marginals = placement_probabilities(8, 5, 1.5)  # 5 positions drawn from a pool of 8
    assert np.allclose(marginals.sum(axis=0), 1.0)  # every position shows one product
    assert np.all(marginals.sum(axis=1) <= 1.0 + 1e-12) and marginals.sum() == pytest.approx(5.0)
    weights = rank_weights(8, 1.5)
    assert marginals[0, 0] == pytest.approx(weights[0] / sum(weights))
    rng, counts = random.Random(3), np.zeros((8, 5))
    for _ in range(40_000):
        remaining = list(range(8))
        for position in range(5):
            pick = rng.choices(remaining, weights=[weights[r] for r in remaining])[0]
            remaining.remove(pick)
            counts[pick, position] += 1
    assert np.abs(counts / 40_000 - marginals).max() < 0.01


def test_sampling_is_deterministic_per_request_and_the_share_holds():
    exploration = ExplorationSettings(share=0.2)
    assert exploration.sample(20, 10, "r-1") == exploration.sample(20, 10, "r-1")
    drawn = exploration.sample(20, 10, "r-2")
    assert len(set(drawn.order)) == 10 and all(0 <= rank < 20 for rank in drawn.order)
    assert all(0 < p <= 1 for p in drawn.propensities) and sum(drawn.shown_probabilities) == pytest.approx(10.0)
    share = np.mean([exploration.explores(f"r-{i}", 10) for i in range(20_000)])
    assert share == pytest.approx(0.2, abs=0.01)
    assert not ExplorationSettings().explores("anything", 10)
    assert not exploration.explores("r-1", 50)  # pages longer than MAX_EXPLORED_PAGE are never sampled
    with pytest.raises(ValueError, match="SHELFWISE_EXPLORATION_SHARE"):
        ExplorationSettings(share=1.5)


def test_ips_and_snips_recover_the_true_ctr_and_cvr_of_an_unserved_ranking():
    log, true_ctr, true_cvr = synthetic_log(20_000)
    result = estimate(TargetPolicy("control", frozenset()), log, samples=200)
    for estimator in ("ips", "snips", "pbm"):
        ctr, cvr = result[f"ctr_{estimator}"], result[f"cvr_{estimator}"]
        assert ctr["low"] <= true_ctr <= ctr["high"], (estimator, ctr, true_ctr)
        assert ctr["value"] == pytest.approx(true_ctr, rel=0.05)
        assert cvr["low"] <= true_cvr <= cvr["high"], (estimator, cvr, true_cvr)
    # The served (logged) CTR is lower than the target's: the estimator is not just echoing the log.
    logged_ctr = np.mean([np.mean(s.clicks) for s in log])
    assert logged_ctr < true_ctr * 0.97
    assert result["effective_sample_size"]["min"] > 100 and result["units"] == 10_000
    # The position-based estimator reads the examination curve off the explored pages.
    assert np.allclose(result["examination"], EXAMINATION / EXAMINATION[0], atol=0.05)
    # ... and, as every click counts (not only those where the target agrees with the log),
    # its interval is the narrowest.
    width = {e: result[f"ctr_{e}"]["high"] - result[f"ctr_{e}"]["low"] for e in ("ips", "snips", "pbm")}
    assert width["pbm"] < min(width["ips"], width["snips"])


def test_target_policies_name_what_they_can_replay():
    with pytest.raises(ValueError, match="bm25"):
        target_policy("bm25", None)
    with pytest.raises(ValueError, match="model-repository"):
        target_policy("learned-all", None)
    with pytest.raises(ValueError, match="does not use one"):
        target_policy("popularity@2", None)
    page = ({"relevance_probability": 0.5, "popularity": 1.0}, {"relevance_probability": 0.55})
    assert np.argmax(TargetPolicy("control", frozenset()).scores(page)) == 1
    assert np.argmax(TargetPolicy("popularity", frozenset({"popularity"}), {"popularity": 0.5}).scores(page)) == 0
    with pytest.raises(ValueError, match="relevance_probability"):
        TargetPolicy("control", frozenset()).scores(({"bm25": 1.0},))

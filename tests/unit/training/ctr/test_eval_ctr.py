"""The evaluation's metrics: the sorted-once weighted AUC equals scikit-learn's (ties and
bootstrap weights included) and the position-stratified AUC compares products only within a
slot (the clustered bootstrap's weights are tested with training/stats.py)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from training.ctr.eval_ctr import RankedScores, Scored, StratifiedScores, score_rows, stratified_auc
from training.stats import Resampling


def test_weighted_auc_matches_scikit_learn_with_ties_and_weights() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random(500) < 0.3).astype(float)
    scores = np.round(rng.random(500) + 0.3 * labels, 1)  # rounding makes many ties
    weights = rng.integers(0, 4, 500).astype(float)
    ranked = RankedScores.of(labels, scores)
    assert abs(ranked.auc() - roc_auc_score(labels, scores)) < 1e-12
    assert abs(ranked.auc(weights) - roc_auc_score(labels, scores, sample_weight=weights)) < 1e-12


def test_stratified_auc_ignores_what_position_alone_explains() -> None:
    # Within each position the score is uninformative, but it follows the position: plain
    # AUC credits it, the stratified AUC does not.
    positions = np.repeat([1, 2], 1000)
    rng = np.random.default_rng(0)
    labels = (rng.random(2000) < np.where(positions == 1, 0.5, 0.1)).astype(float)
    scores = np.where(positions == 1, 0.9, 0.1) + 0.01 * rng.random(2000)
    assert roc_auc_score(labels, scores) > 0.65
    assert abs(stratified_auc(labels, scores, positions) - 0.5) < 0.06


def test_weighted_stratified_auc_equals_the_unweighted_one_on_repeated_rows() -> None:
    rng = np.random.default_rng(4)
    positions = rng.integers(1, 6, 600)
    labels = (rng.random(600) < 0.4 / positions).astype(float)
    scores = rng.random(600) + 0.2 * labels
    weights = rng.integers(0, 3, 600)
    repeated = np.repeat(np.arange(600), weights)
    weighted = StratifiedScores(labels, scores, positions).auc(weights.astype(float))
    assert abs(weighted - stratified_auc(labels[repeated], scores[repeated], positions[repeated])) < 1e-12


def test_rows_compare_with_their_reference_on_paired_resamples() -> None:
    rng = np.random.default_rng(5)
    labels = (rng.random(2000) < 0.3).astype(float)
    good, weak = labels + rng.normal(0, 0.7, 2000), labels + rng.normal(0, 1.5, 2000)
    squash = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
    rows = score_rows(
        "click", labels, rng.integers(1, 11, 2000), np.repeat(np.arange(200), 10),
        [Scored("reference", squash(good)), Scored("weaker", squash(weak), reference="reference")], Resampling(50, 0),
    )
    reference, weaker = rows
    assert reference.auc.delta is None and reference.auc.interval[0] < reference.auc.value < reference.auc.interval[1]
    assert abs(weaker.auc.delta - (weaker.auc.value - reference.auc.value)) < 1e-12
    assert weaker.auc.delta_interval[1] < 0  # clearly worse, and the paired interval says so
    assert weaker.stratified_auc.delta < 0

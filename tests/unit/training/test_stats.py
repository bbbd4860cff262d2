"""The shared bootstrap intervals: a mean's interval brackets it and narrows with more units, a
paired difference is the interval of the per-unit differences, the clustered bootstrap keeps
whole units together, and non-finite replicates are left out only when asked."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.stats import (
    cluster_weights,
    mean_interval,
    paired_difference_interval,
    percentile_interval,
    resampled_indices,
    resampled_sums,
)

SAMPLES, SEED = 10_000, 7  # the search evaluation's


def test_mean_interval_brackets_the_mean_and_narrows_with_more_queries():
    mean, low, high = mean_interval([0.0, 1.0] * 10, SAMPLES, SEED)
    assert mean == pytest.approx(0.5) and low < mean < high
    _, wide_low, wide_high = mean_interval([0.0, 1.0] * 5, SAMPLES, SEED)
    _, narrow_low, narrow_high = mean_interval([0.0, 1.0] * 200, SAMPLES, SEED)
    assert narrow_high - narrow_low < wide_high - wide_low
    assert mean_interval([0.3] * 7, SAMPLES, SEED) == pytest.approx((0.3, 0.3, 0.3))
    assert all(math.isnan(x) for x in mean_interval([], SAMPLES, SEED))


def test_paired_difference_interval_is_the_interval_of_the_differences():
    ours, theirs = [0.9, 0.5, 0.7, 0.4], [0.6, 0.5, 0.2, 0.5]
    differences = [a - b for a, b in zip(ours, theirs)]
    assert paired_difference_interval(ours, theirs, 500, 3) == mean_interval(differences, 500, 3)


def test_cluster_weights_draw_whole_impressions() -> None:
    impression = np.repeat(np.arange(20), 5)
    for weights in cluster_weights(impression, 10, seed=1):
        per_page = weights.reshape(20, 5)
        assert (per_page == per_page[:, :1]).all()
        assert per_page[:, 0].sum() == 20


def test_resampled_indices_are_seeded_and_in_range():
    first = list(resampled_indices(7, 5, seed=2))
    assert len(first) == 5 and all(len(pick) == 7 and pick.min() >= 0 and pick.max() < 7 for pick in first)
    assert all((a == b).all() for a, b in zip(first, resampled_indices(7, 5, seed=2)))


def test_percentile_interval_leaves_out_non_finite_replicates_only_when_asked():
    replicates = np.array([1.0, 2.0, np.nan, 3.0])
    assert all(math.isnan(x) for x in percentile_interval(replicates))
    low, high = percentile_interval(replicates, finite_only=True)
    assert 1.0 <= low < high <= 3.0
    assert all(math.isnan(x) for x in percentile_interval([np.nan], finite_only=True))


def test_resampled_sums_keep_the_total_number_of_units():
    units = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    sums = resampled_sums(units, 600, np.random.default_rng(0), chunk=250)
    assert sums.shape == (600, 2)
    # Each resample holds 3 units, so the first column (1, 0, 1) sums to at most 3.
    assert sums.min() >= 0 and sums[:, 0].max() <= 3

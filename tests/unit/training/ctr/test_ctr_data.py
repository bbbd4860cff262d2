"""CTR training rows from impression records: one row per product shown, labels at the right
rows, impressions without features skipped, and time splits that keep pages whole."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from services.ranking.features import FEATURE_NAMES
from training.ctr.ctr_data import feature_vector, rows_from_impressions

T0 = datetime(2025, 3, 1, tzinfo=timezone.utc)


def record(index: int, product_ids, features, clicked=(), purchased=(), first_position=1) -> dict:
    return {
        "request_id": f"r{index}", "occurred_at": T0 + timedelta(minutes=index), "first_position": first_position,
        "product_ids": list(product_ids), "features": features,
        "clicked_positions": list(clicked), "purchased_ids": list(purchased),
    }


def test_feature_vector_follows_the_head_layout_with_absent_features_zero_and_unknown_ignored() -> None:
    vector = feature_vector({"popularity": 0.5, "dense_similarity": 0.25, "a_future_feature": 9.0})
    expected = np.zeros(len(FEATURE_NAMES), dtype=np.float32)
    expected[FEATURE_NAMES.index("popularity")] = 0.5
    expected[FEATURE_NAMES.index("dense_similarity")] = 0.25
    np.testing.assert_array_equal(vector, expected)


def test_clicks_land_on_their_positions_and_purchases_on_their_product_on_later_pages() -> None:
    rows = rows_from_impressions([
        record(0, ["a", "b", "c"], [{"bm25": 1.0}, {}, {"bm25": 0.5}], clicked=[12], purchased=["c"], first_position=11),
    ])
    assert rows.positions.tolist() == [11, 12, 13]
    assert rows.clicks.tolist() == [0.0, 1.0, 1.0]  # "c" was bought without a logged click: still engaged
    assert rows.purchases.tolist() == [0.0, 0.0, 1.0]
    assert rows.features[:, FEATURE_NAMES.index("bm25")].tolist() == [1.0, 0.0, 0.5]


def test_impressions_without_or_with_misaligned_features_are_skipped_and_counted() -> None:
    rows = rows_from_impressions(
        [record(0, ["a", "b"], "[]"), record(1, ["a", "b"], [{}]), record(2, ["a"], '[{"fusion": 0.5}]', clicked=[1])],
        skipped=3,
    )
    assert len(rows) == 1 and rows.impressions == 1
    assert rows.clicks.tolist() == [1.0]
    assert rows.skipped_impressions == 5


def test_time_splits_keep_every_page_on_one_side_and_the_later_side_later() -> None:
    rows = rows_from_impressions([record(i, ["a", "b", "c"], [{}, {}, {}]) for i in range(10)])
    earlier, later = rows.split_tail(0.2)
    assert (earlier.impressions, later.impressions) == (8, 2)
    assert earlier.occurred_at.max() < later.occurred_at.min()
    before, after = rows.split_at(T0 + timedelta(minutes=6))
    assert (len(before), len(after)) == (18, 12)
    assert set(before.impression).isdisjoint(after.impression)


def test_split_tail_rejects_fractions_outside_zero_one() -> None:
    rows = rows_from_impressions([record(0, ["a"], [{}])])
    with pytest.raises(ValueError):
        rows.split_tail(1.0)

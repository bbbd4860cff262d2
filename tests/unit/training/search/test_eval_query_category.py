"""The query -> category evaluation: the served vote and its baselines on tiny labelled data."""

from __future__ import annotations

import numpy as np

from training.search.eval_query_category import Encoded, bm25_predictions, compare, vote_predictions
from training.stats import Resampling


def unit(rows):
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


EXAMPLES = ["green tea leaves", "black tea bags", "dark roast coffee", "espresso beans"]
LABELS = ["Tea", "Tea", "Coffee", "Coffee"]
VECTORS = unit([[1, 0.1], [0.9, 0.2], [0.1, 1], [0.2, 0.9]])


def test_the_vote_takes_the_category_of_the_nearest_examples():
    assert vote_predictions(VECTORS, LABELS, unit([[1, 0], [0, 1]])) == ["Tea", "Coffee"]


def test_the_bm25_vote_reads_words_and_falls_back_to_the_majority():
    assert bm25_predictions(EXAMPLES, LABELS, ["tea", "coffee beans", "wine"], majority="Tea") == ["Tea", "Coffee", "Tea"]


def test_every_method_is_scored_on_the_same_queries():
    queries = Encoded(["tea", "roast"], ["Tea", "Coffee"], unit([[1, 0], [0, 1]]))
    report = compare(Encoded(EXAMPLES, LABELS, VECTORS), queries, ["tea", "roast"], Resampling(50, 1))
    assert set(report) == {"majority class", "BM25 vote", "category vote (served)"}
    assert report["category vote (served)"]["accuracy"] == 1.0
    assert report["majority class"]["accuracy"] == 0.5

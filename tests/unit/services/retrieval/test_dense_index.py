"""Unit tests of services.retrieval.dense.DenseIndex: exact and HNSW search, masks, tombstones,
compaction."""

from __future__ import annotations

import numpy as np

from services.retrieval.dense import DenseIndex


def unit_vectors(count: int, dimension: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, dimension)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def brute_force(vectors: np.ndarray, query: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    scores = vectors @ query
    scores[~allowed] = -np.inf
    return np.argsort(-scores, kind="stable")[:k]


def test_add_returns_consecutive_slots() -> None:
    index = DenseIndex(8)
    assert index.add(unit_vectors(3, 8, 0)).tolist() == [0, 1, 2]
    assert index.add(unit_vectors(2, 8, 1)).tolist() == [3, 4]
    assert index.slots == 5
    assert index.alive.all()


def test_exact_search_returns_true_top_k_by_inner_product() -> None:
    vectors = unit_vectors(500, 16, 1)
    index = DenseIndex(16)
    index.add(vectors)
    allowed = np.ones(500, dtype=bool)
    for query in unit_vectors(20, 16, 2):
        slots, scores = index.search(query, 10, allowed)
        expected = brute_force(vectors, query, allowed, 10)
        assert slots.tolist() == expected.tolist()
        np.testing.assert_allclose(scores, vectors[expected] @ query, rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(scores) <= 0)


def test_exact_search_returns_fewer_when_fewer_are_allowed() -> None:
    index = DenseIndex(8)
    index.add(unit_vectors(10, 8, 3))
    allowed = np.zeros(10, dtype=bool)
    allowed[[2, 7]] = True
    slots, scores = index.search(unit_vectors(1, 8, 4)[0], 5, allowed)
    assert sorted(slots.tolist()) == [2, 7]
    assert len(scores) == 2


def test_search_with_nothing_allowed_or_zero_limit_is_empty() -> None:
    index = DenseIndex(8)
    index.add(unit_vectors(10, 8, 5))
    query = unit_vectors(1, 8, 6)[0]
    slots, scores = index.search(query, 5, np.zeros(10, dtype=bool))
    assert len(slots) == 0 and len(scores) == 0
    slots, scores = index.search(query, 0, np.ones(10, dtype=bool))
    assert len(slots) == 0 and len(scores) == 0


def test_exact_search_respects_allowed_mask() -> None:
    vectors = unit_vectors(300, 16, 7)
    index = DenseIndex(16)
    index.add(vectors)
    allowed = np.random.default_rng(8).random(300) < 0.3
    for query in unit_vectors(10, 16, 9):
        slots, _ = index.search(query, 15, allowed)
        assert allowed[slots].all()
        assert slots.tolist() == brute_force(vectors, query, allowed, 15).tolist()


def test_removed_slots_never_come_back() -> None:
    vectors = unit_vectors(200, 16, 10)
    index = DenseIndex(16)
    index.add(vectors)
    removed = np.arange(0, 200, 3)
    index.remove(removed)
    assert not index.alive[removed].any()
    for query in list(unit_vectors(10, 16, 11)) + [vectors[0], vectors[3]]:  # even a removed product's own vector
        slots, _ = index.search(query, 50, index.alive)
        assert not set(slots.tolist()) & set(removed.tolist())
        assert slots.tolist() == brute_force(vectors, query, index.alive, 50).tolist()


def test_hnsw_search_with_half_mask_returns_only_allowed_slots_with_high_recall() -> None:
    count, dimension, k = 2_000, 32, 10
    vectors = unit_vectors(count, dimension, 12)
    index = DenseIndex(dimension, exact_threshold=0)
    index.add(vectors)
    allowed = np.zeros(count, dtype=bool)
    allowed[np.random.default_rng(13).permutation(count)[: count // 2]] = True
    hits = 0
    queries = unit_vectors(50, dimension, 14)
    for query in queries:
        slots, scores = index.search(query, k, allowed)
        assert len(slots) == k
        assert allowed[slots].all()
        np.testing.assert_allclose(scores, vectors[slots] @ query, rtol=1e-4, atol=1e-5)
        hits += len(set(slots.tolist()) & set(brute_force(vectors, query, allowed, k).tolist()))
    assert hits / (k * len(queries)) >= 0.9


def test_hnsw_search_never_returns_removed_slots() -> None:
    vectors = unit_vectors(1_000, 16, 15)
    index = DenseIndex(16, exact_threshold=0)
    index.add(vectors)
    index.remove(np.arange(0, 1_000, 2))
    for query in vectors[:20]:  # removed slots' own vectors are their best match
        slots, _ = index.search(query, 10, index.alive)
        assert index.alive[slots].all()


def test_hnsw_search_with_tiny_mask_returns_only_what_is_allowed() -> None:
    index = DenseIndex(16, exact_threshold=0)
    index.add(unit_vectors(500, 16, 16))
    allowed = np.zeros(500, dtype=bool)
    allowed[[5, 499]] = True
    slots, _ = index.search(unit_vectors(1, 16, 17)[0], 10, allowed)
    assert set(slots.tolist()) <= {5, 499}
    assert slots.dtype == np.int64


def test_compact_mapping_preserves_search_results() -> None:
    vectors = unit_vectors(400, 16, 18)
    index = DenseIndex(16)
    index.add(vectors)
    removed = np.random.default_rng(19).permutation(400)[:150]
    index.remove(removed)
    queries = unit_vectors(10, 16, 20)
    before = [index.search(query, 20, index.alive) for query in queries]
    old_alive = index.alive.copy()

    mapping = index.compact()

    assert mapping.shape == (400,)
    assert (mapping[removed] == -1).all()
    assert sorted(mapping[old_alive].tolist()) == list(range(250))
    assert index.slots == 250 and index.alive.all()
    np.testing.assert_array_equal(index.vectors[mapping[old_alive]], vectors[old_alive])
    for query, (old_slots, old_scores) in zip(queries, before):
        new_slots, new_scores = index.search(query, 20, index.alive)
        assert new_slots.tolist() == mapping[old_slots].tolist()
        np.testing.assert_allclose(new_scores, old_scores, rtol=1e-6)


def test_compact_rebuilds_hnsw_over_live_vectors_only() -> None:
    vectors = unit_vectors(600, 16, 21)
    index = DenseIndex(16, exact_threshold=0)
    index.add(vectors)
    index.remove(np.arange(300))
    mapping = index.compact()
    assert index.slots == 300
    slots, _ = index.search(vectors[450], 1, index.alive)
    assert slots.tolist() == [mapping[450]]


def test_needs_compaction_only_when_dead_exceed_1000_and_live() -> None:
    index = DenseIndex(4)
    index.add(unit_vectors(2_004, 4, 22))
    assert not index.needs_compaction()
    index.remove(np.arange(1_000))  # 1000 dead: not past 1000
    assert not index.needs_compaction()
    index.remove(np.arange(1_000, 1_002))  # 1002 dead vs 1002 live: not more than live
    assert not index.needs_compaction()
    index.remove(np.array([1_002]))  # 1003 dead vs 1001 live
    assert index.needs_compaction()
    index.compact()
    assert not index.needs_compaction()


def test_needs_compaction_is_false_for_small_indexes_even_if_mostly_dead() -> None:
    index = DenseIndex(4)
    index.add(unit_vectors(1_001, 4, 23))
    index.remove(np.arange(1_000))  # 1000 dead, 1 live
    assert not index.needs_compaction()


def test_similarity_is_inner_product_with_given_slots() -> None:
    vectors = unit_vectors(20, 8, 24)
    index = DenseIndex(8)
    index.add(vectors)
    query = unit_vectors(1, 8, 25)[0]
    np.testing.assert_allclose(index.similarity(query, np.array([3, 1])), vectors[[3, 1]] @ query, rtol=1e-6)

"""Micro-batching: concurrent calls run together and each gets its own result, a failing batch
fails each of its calls, and concurrent exact dense searches share one matrix product while
answering exactly what they answer one by one."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from services.common.batching import MicroBatcher
from services.retrieval.dense import DenseIndex
from services.retrieval.filters import CandidateFilters
from services.retrieval.retriever import CatalogIndex
from tests.support.retrieval import PRODUCTS, HashingEncoder


async def test_calls_that_arrive_while_a_batch_runs_go_together_in_order():
    seen: list[list[int]] = []
    release = asyncio.Event()

    async def double(items):
        seen.append(list(items))
        await release.wait()
        return [2 * item for item in items]

    batcher = MicroBatcher(double, "test.double", max_batch=3)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0)  # the first call runs alone: no wait at low load
    rest = [asyncio.create_task(batcher.submit(n)) for n in (2, 3, 4, 5)]
    await asyncio.sleep(0)
    release.set()
    assert await first == 2
    assert [await task for task in rest] == [4, 6, 8, 10]
    assert seen == [[1], [2, 3, 4], [5]]
    assert batcher.batches == 3


async def test_a_failing_batch_fails_each_of_its_calls_and_the_next_batch_still_runs():
    calls = 0

    async def flaky(items):
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("backend down")
        return items

    batcher = MicroBatcher(flaky, "test.flaky")
    with pytest.raises(RuntimeError, match="backend down"):
        await batcher.submit("a")
    assert await batcher.submit("b") == "b"


def test_max_batch_must_be_positive():
    async def identity(items):
        return items

    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(identity, "test", max_batch=0)


def test_scores_of_a_batch_of_queries_equal_each_query_scored_alone():
    rng = np.random.default_rng(3)
    dense = DenseIndex(16)
    dense.add(rng.normal(size=(40, 16)).astype(np.float32))
    queries = rng.normal(size=(5, 16)).astype(np.float32)
    together = dense.all_scores(queries)
    assert together.shape == (5, 40)
    for row, query in enumerate(queries):
        np.testing.assert_allclose(together[row], dense.all_scores(query), rtol=1e-5, atol=1e-6)


async def test_concurrent_searches_share_one_matrix_product_and_answer_as_alone():
    encoder = HashingEncoder()
    catalog = CatalogIndex(store=None, encoder=encoder)
    catalog.slots.apply_upsert(PRODUCTS, await encoder.encode([p.embedding_text() for p in PRODUCTS], kind="passage"))
    queries = ["red wine", "white wine", "running shoe", "red shoe"]
    alone = [await catalog.retrieve(q, CandidateFilters(), limit=10) for q in queries]

    products: list[int] = []
    all_scores = catalog.slots.dense.all_scores

    def counting(batch):
        products.append(len(batch))
        return all_scores(batch)

    catalog.slots.dense.all_scores = counting
    together = await asyncio.gather(*(catalog.retrieve(q, CandidateFilters(), limit=10) for q in queries))
    assert together == alone
    # The query vectors are cached from the first pass, so all four searches are waiting
    # before the first batch starts: one product for the four.
    assert products == [4]


@pytest.mark.parametrize("k, lexical_weight", [(60.0, 0.5), (0.0, 1.0), (10.0, 0.0)])
def test_fused_scores_of_rank_arrays_equal_the_scalar_formula(k, lexical_weight):
    from services.retrieval.fusion import Fusion

    fusion = Fusion(k=k, lexical_weight=lexical_weight)
    lexical, dense = np.meshgrid(np.arange(0, 30), np.arange(0, 30))
    expected = [fusion.scaled(int(l), int(d)) for l, d in zip(lexical.ravel(), dense.ravel())]
    assert fusion.scaled_ranks(lexical.ravel(), dense.ravel()).tolist() == expected


async def test_fused_candidates_are_ordered_by_fused_score_then_cosine():
    encoder = HashingEncoder()
    catalog = CatalogIndex(store=None, encoder=encoder)
    catalog.slots.apply_upsert(PRODUCTS, await encoder.encode([p.embedding_text() for p in PRODUCTS], kind="passage"))
    result = await catalog.retrieve("red wine shoe", CandidateFilters(), limit=10)
    keys = [(-c.fused_score, -c.dense_score) for c in result.candidates]
    assert keys == sorted(keys) and len(keys) == len(PRODUCTS)
    fusion = catalog._fusion
    assert all(c.fused_score == fusion.scaled(c.lexical_rank, c.dense_rank) for c in result.candidates)

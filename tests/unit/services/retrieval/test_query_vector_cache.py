"""Retrieval keeps the vectors of recent query texts: a repeated query is not encoded again
(encoding is most of a search's CPU on a CPU-only machine), the cache is bounded and drops the
least recently used text, and a failed encoding is not cached."""

from __future__ import annotations

import numpy as np

from services.retrieval.filters import CandidateFilters
from services.retrieval.retriever import CatalogIndex, TextQueryOptions
from services.retrieval.vector_space import QueryVectorCache
from tests.support.retrieval import PRODUCTS, HashingEncoder


async def catalogue(cache_size: int = 10) -> tuple[CatalogIndex, HashingEncoder]:
    encoder = HashingEncoder()
    catalog = CatalogIndex(store=None, encoder=encoder, query_cache_size=cache_size)
    catalog.slots.apply_upsert(PRODUCTS, await encoder.encode([p.embedding_text() for p in PRODUCTS], kind="passage"))
    encoder.calls.clear()
    return catalog, encoder


async def test_a_repeated_query_is_encoded_once_and_answered_the_same():
    catalog, encoder = await catalogue()
    first = await catalog.retrieve("red wine", CandidateFilters(), limit=10)
    second = await catalog.retrieve("red wine", CandidateFilters(), limit=10)
    assert encoder.calls == [("query", ["red wine"])]
    assert first == second
    assert (catalog.query_cache.hits, catalog.query_cache.misses) == (1, 1)


async def test_lexical_only_requests_never_encode_nor_fill_the_cache():
    catalog, encoder = await catalogue()
    await catalog.retrieve("red wine", CandidateFilters(), limit=10, options=TextQueryOptions(mode="lexical"))
    assert encoder.calls == [] and len(catalog.query_cache) == 0


async def test_a_failed_encoding_is_not_cached():
    catalog, encoder = await catalogue()
    encoder.down = True
    degraded = await catalog.retrieve("red wine", CandidateFilters(), limit=10)
    encoder.down = False
    healthy = await catalog.retrieve("red wine", CandidateFilters(), limit=10)
    assert degraded.degraded == ("dense",) and healthy.degraded == ()
    assert len(encoder.calls) == 2


def test_the_least_recently_used_text_goes_first():
    cache = QueryVectorCache(capacity=2)
    cache.put("a", np.ones(3))
    cache.put("b", np.ones(3))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", np.ones(3))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("c") is not None
    assert len(cache) == 2


def test_a_zero_capacity_cache_keeps_nothing():
    cache = QueryVectorCache(capacity=0)
    cache.put("a", np.ones(3))
    assert cache.get("a") is None and len(cache) == 0


def test_the_cache_keeps_its_own_copy_of_a_vector():
    cache = QueryVectorCache()
    batch = np.ones((2, 3), dtype=np.float32)
    cache.put("a", batch[0])
    batch[0, 0] = 5.0
    assert cache.get("a")[0] == 1.0


async def test_concurrent_queries_are_encoded_together_and_answered_like_single_ones():
    import asyncio

    catalog, encoder = await catalogue()
    texts = ["red wine", "running shoe", "white wine", "red wine", "malbec"]
    together = await asyncio.gather(*(catalog.retrieve(t, CandidateFilters(), limit=10) for t in texts))
    assert encoder.calls == [("query", ["red wine", "running shoe", "white wine", "malbec"])]
    alone, _ = await catalogue(cache_size=0)
    for text, result in zip(texts, together):
        assert result == await alone.retrieve(text, CandidateFilters(), limit=10)


async def test_a_query_whose_request_gave_up_while_waiting_is_not_encoded():
    import asyncio

    from services.retrieval.vector_space import QueryBatcher

    encoder = HashingEncoder()
    release = encoder.hold()
    batcher = QueryBatcher(encoder)
    first = asyncio.create_task(batcher.encode("first"))
    await asyncio.sleep(0)  # "first" is being encoded
    abandoned = asyncio.create_task(batcher.encode("abandoned"))
    kept = asyncio.create_task(batcher.encode("kept"))
    await asyncio.sleep(0)
    abandoned.cancel()
    release.set()
    await first, await kept
    assert [texts for _, texts in encoder.calls] == [["first"], ["kept"]]

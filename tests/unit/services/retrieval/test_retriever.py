"""CatalogIndex fusion and its stated degradation: without the text encoder, retrieval answers
from BM25 alone and says so. The encoder here is a deterministic stand-in for the ONNX model
(a bag-of-words hash), so the test needs neither the model nor a database."""

from __future__ import annotations

import numpy as np
import pytest

from services.retrieval.catalog import Product
from services.retrieval.filters import CandidateFilters
from services.retrieval.retriever import CatalogIndex, TextQueryOptions
from tests.support.retrieval import PRODUCTS, HashingEncoder, index  # noqa: F401  (`index`: a fixture)


async def test_search_text_is_encoded_as_a_query(index):
    catalog, encoder = index
    await catalog.retrieve("red wine", CandidateFilters(), limit=10)
    assert encoder.calls == [("query", ["red wine"])]


async def test_with_one_space_a_translation_joins_the_query_in_the_dense_search_and_in_bm25(index):
    catalog, encoder = index
    # A query the lexical list cannot match, and its English rendering.
    result = await catalog.retrieve("红葡萄酒", CandidateFilters(), limit=10, options=TextQueryOptions(translation="red wine"))
    assert sorted(texts for _, texts in encoder.calls) == [["红葡萄酒", "red wine"]]  # one batch, both texts
    top = result.candidates[0]
    # BM25 reads "红葡萄酒 red wine": the rendering's English words match.
    assert top.product.id == "wine-1" and top.lexical_rank == 1 and top.dense_rank == 1
    query, translation = (await encoder.encode(["红葡萄酒", "red wine"], kind="query"))
    mean = (query + translation) / np.linalg.norm(query + translation)
    vectors, degraded = await catalog.query_encoding.vectors("红葡萄酒", "red wine", None)
    assert np.allclose(vectors[0], mean, atol=1e-6) and degraded == ()
    # Each text's vector is cached on its own: the query again, or the rendering as a query, encode nothing.
    encoder.calls.clear()
    await catalog.retrieve("红葡萄酒", CandidateFilters(), limit=10, options=TextQueryOptions(translation="red wine"))
    await catalog.retrieve("red wine", CandidateFilters(), limit=10)
    assert encoder.calls == []


class RecordingStore:
    """The slice of ProductStore that an upsert touches."""

    def __init__(self):
        self.saved: dict[str, int] = {}

    async def upsert(self, products, vectors):
        for version, matrix in vectors.items():
            assert len(matrix) == len(products)
            self.saved[version] = self.saved.get(version, 0) + len(matrix)
        return len(products), 0, {}


class MultilingualEncoder(HashingEncoder):
    """A second space: its own version and dimension, vectors from the same hashing."""

    version = "hashing-multilingual/1"


@pytest.fixture
async def routed() -> tuple[CatalogIndex, HashingEncoder, MultilingualEncoder]:
    english, multilingual = HashingEncoder(), MultilingualEncoder()
    catalog = CatalogIndex(store=None, encoder=english, multilingual_encoder=multilingual)
    texts = [p.embedding_text() for p in PRODUCTS]
    catalog.slots.apply_upsert(
        PRODUCTS, await english.encode(texts, kind="passage"), await multilingual.encode(texts, kind="passage")
    )
    english.calls.clear()
    multilingual.calls.clear()
    return catalog, english, multilingual


async def test_routing_sends_the_rendering_to_the_english_space_and_the_query_as_typed_to_the_multilingual_one(routed):
    catalog, english, multilingual = routed
    result = await catalog.retrieve("红葡萄酒", CandidateFilters(), limit=10, options=TextQueryOptions(translation="red wine"))
    assert english.calls == [("query", ["red wine"])]
    assert multilingual.calls == [("query", ["红葡萄酒"])]
    top = result.candidates[0]
    assert top.product.id == "wine-1" and top.dense_rank == 1 and top.dense_score > 0.5
    # The hashing "multilingual" encoder cannot read Chinese either: its list is there, ranked
    # by its own (low) cosines, and every candidate carries both spaces' scores.
    assert all(c.multilingual_rank > 0 for c in result.candidates)
    assert result.degraded == ()


async def test_an_english_query_reaches_both_spaces_as_typed(routed):
    catalog, english, multilingual = routed
    result = await catalog.retrieve("riesling white wine", CandidateFilters(), limit=10)
    assert english.calls == [("query", ["riesling white wine"])]
    assert multilingual.calls == [("query", ["riesling white wine"])]
    top = result.candidates[0]
    assert top.product.id == "wine-2" and top.dense_rank == 1 and top.multilingual_rank == 1 and top.lexical_rank == 1
    assert top.multilingual_score == pytest.approx(top.dense_score)


async def test_without_the_multilingual_encoder_the_english_and_lexical_lists_still_answer_and_it_is_said(routed):
    catalog, _, multilingual = routed
    multilingual.down = True
    result = await catalog.retrieve("red wine", CandidateFilters(), limit=10)
    assert result.degraded == ("dense.multilingual",)
    assert result.candidates[0].product.id == "wine-1" and result.candidates[0].dense_rank == 1
    assert all(c.multilingual_score == 0 and c.multilingual_rank == 0 for c in result.candidates)


async def test_an_upsert_embeds_and_stores_products_in_every_space():
    english, multilingual = HashingEncoder(), MultilingualEncoder()
    store = RecordingStore()
    catalog = CatalogIndex(store=store, encoder=english, multilingual_encoder=multilingual)
    await catalog.upsert(PRODUCTS)
    assert english.calls == multilingual.calls == [("passage", [p.embedding_text() for p in PRODUCTS])]
    assert store.saved == {"hashing/1": 3, "hashing-multilingual/1": 3}
    assert catalog.model_version == "hashing/1+hashing-multilingual/1"
    result = await catalog.retrieve("white wine", CandidateFilters(), limit=3)
    assert result.candidates[0].product.id == "wine-2"


async def test_products_are_encoded_as_passages():
    encoder = HashingEncoder()
    catalog = CatalogIndex(store=RecordingStore(), encoder=encoder)
    await catalog.upsert(PRODUCTS[:1])
    assert encoder.calls == [("passage", [PRODUCTS[0].embedding_text()])]


async def test_an_upsert_encodes_only_products_whose_text_changed():
    encoder = HashingEncoder()
    catalog = CatalogIndex(store=RecordingStore(), encoder=encoder)
    await catalog.upsert(PRODUCTS)
    first = catalog.slots.dense.vectors[[catalog.slots.slot_of[p.id] for p in PRODUCTS]].copy()
    encoder.calls.clear()
    # A new price and attributes (not in the embedding text), a new title, a new product.
    repriced = Product(id="wine-1", title="Malbec Mendoza red wine", price=12.0, category="Red Wine",
                       attributes={"vintage": "2021"})
    renamed = Product(id="wine-2", title="Dry Riesling white wine", price=15.0, category="White Wine")
    added = Product(id="tea-1", title="Green tea", price=4.0, category="Tea")
    await catalog.upsert([repriced, renamed, added, PRODUCTS[2]])
    assert encoder.calls == [("passage", [renamed.embedding_text(), added.embedding_text()])]
    vector = lambda product_id: catalog.slots.dense.vectors[catalog.slots.slot_of[product_id]]  # noqa: E731
    assert np.array_equal(vector("wine-1"), first[0]) and np.array_equal(vector("shoe-1"), first[2])
    assert np.array_equal(vector("wine-2"), (await encoder.encode([renamed.embedding_text()], kind="passage"))[0])
    assert catalog.slots.products[catalog.slots.slot_of["wine-1"]].price == 12.0
    encoder.calls.clear()
    await catalog.upsert([repriced])  # all unchanged: nothing to encode, no encoder call at all
    assert encoder.calls == []
    result = await catalog.retrieve("malbec mendoza red wine", CandidateFilters(), limit=3)
    assert result.candidates[0].product.id == "wine-1" and result.candidates[0].dense_rank == 1


async def test_healthy_retrieval_fuses_both_lists(index):
    catalog, _ = index
    result = await catalog.retrieve("red wine", CandidateFilters(), limit=10)
    assert result.degraded == ()
    top = result.candidates[0]
    assert top.product.id == "wine-1" and top.lexical_rank == 1 and top.dense_rank == 1
    assert top.lexical_coverage > 0


async def test_without_the_encoder_retrieval_is_lexical_only_and_says_so(index):
    catalog, encoder = index
    encoder.down = True
    result = await catalog.retrieve("red wine", CandidateFilters(), limit=10)
    assert result.degraded == ("dense",)
    assert [c.product.id for c in result.candidates][0] == "wine-1"
    assert all(c.dense_rank == 0 and c.dense_score == 0.0 for c in result.candidates)
    assert all(c.lexical_rank > 0 for c in result.candidates)


async def test_filters_hold_in_the_degraded_path_too(index):
    catalog, encoder = index
    encoder.down = True
    result = await catalog.retrieve("red", CandidateFilters(categories=("Running Shoes",)), limit=10)
    assert [c.product.id for c in result.candidates] == ["shoe-1"]


async def test_a_product_deleted_while_the_query_is_encoded_is_not_returned(index):
    catalog, encoder = index
    encode = encoder.encode

    async def encode_then_lose_a_product(texts, *, kind, timeout=None):
        vectors = await encode(texts, kind=kind, timeout=timeout)
        catalog.slots.apply_delete(["wine-1"])  # what a catalogue sync applying another replica's delete does
        return vectors

    encoder.encode = encode_then_lose_a_product
    result = await catalog.retrieve("red wine", CandidateFilters(), limit=10)
    assert "wine-1" not in [c.product.id for c in result.candidates]


def test_product_messages_are_reused_until_the_product_is_replaced_and_stay_bounded():
    from services.retrieval.catalog import Product
    from services.retrieval.servicer import ProductMessages, product_to_pb

    messages = ProductMessages(capacity=2)
    first = Product(id="p1", title="Green tea", price=4.5)
    assert messages.get(first) is messages.get(first)
    assert messages.get(first) == product_to_pb(first)
    replaced = Product(id="p1", title="Green tea, loose leaf", price=4.5)
    assert messages.get(replaced).title == "Green tea, loose leaf"
    for name in ("p2", "p3"):
        messages.get(Product(id=name, title=name, price=1.0))
    assert len(messages._entries) == 2 and "p1" not in messages._entries


async def test_dense_scores_computed_while_the_catalogue_changed_are_not_used(index):
    catalog, _ = index

    def stale_scores(queries):
        # The catalogue changes while the matrix product runs off the event loop; what comes
        # back no longer fits it (here: scores no fresh computation would give).
        catalog.slots.apply_delete(["shoe-1"])
        return np.tile(np.array([-1.0, 1.0, 0.0], dtype=np.float32), (len(queries), 1))

    catalog.slots.dense.all_scores = stale_scores
    result = await catalog.retrieve("red wine", CandidateFilters(), limit=10)
    by_dense_rank = sorted((c for c in result.candidates if c.dense_rank), key=lambda c: c.dense_rank)
    assert [c.product.id for c in by_dense_rank] == ["wine-1", "wine-2"]


def test_dense_search_with_precomputed_scores_equals_computing_them():
    from services.retrieval.dense import DenseIndex

    rng = np.random.default_rng(0)
    dense = DenseIndex(16)
    dense.add(rng.normal(size=(50, 16)).astype(np.float32))
    query = rng.normal(size=16).astype(np.float32)
    allowed = rng.random(50) < 0.7
    slots, scores = dense.search(query, 10, allowed)
    again = dense.search(query, 10, allowed, dense.all_scores(query))
    np.testing.assert_array_equal(again[0], slots)
    np.testing.assert_allclose(again[1], scores, rtol=1e-6)
    # Scores over fewer slots than the index now has are not used.
    stale = dense.all_scores(query)[:40]
    np.testing.assert_array_equal(dense.search(query, 10, allowed, stale)[0], slots)


async def test_a_search_whose_query_vector_is_late_answers_from_bm25_and_sheds_its_encoding(index):
    import asyncio

    catalog, encoder = index
    release = encoder.hold()
    first = asyncio.create_task(catalog.retrieve("white wine", CandidateFilters(), limit=10))
    await asyncio.sleep(0)  # "white wine" is being encoded, and stays so
    late = await asyncio.wait_for(
        catalog.retrieve("red wine", CandidateFilters(), limit=10, options=TextQueryOptions(dense_wait=0.05)), 10
    )
    assert late.degraded == ("dense",)
    assert [c.product.id for c in late.candidates][:2] == ["wine-1", "wine-2"]
    assert all(c.dense_rank == 0 for c in late.candidates)
    release.set()
    assert (await first).degraded == ()
    # The late search left the queue before its batch: only "white wine" was encoded.
    assert encoder.calls == [("query", ["white wine"])]


def test_the_wait_for_a_query_vector_is_at_most_a_third_of_the_callers_time_left():
    from services.retrieval.servicer import RetrievalServicer

    class CallerWith:
        def __init__(self, remaining):
            self.remaining = remaining

        def time_remaining(self):
            return self.remaining

    servicer = RetrievalServicer(index=None, default_limit=10, dense_wait_seconds=0.5)
    assert servicer._dense_wait_for(CallerWith(None)) == 0.5
    assert servicer._dense_wait_for(CallerWith(3.0)) == 0.5
    assert servicer._dense_wait_for(CallerWith(0.6)) == pytest.approx(0.2)
    assert servicer._dense_wait_for(CallerWith(-1.0)) == 0.0


async def test_a_vector_encoded_for_a_search_that_stopped_waiting_is_still_cached(index):
    import asyncio

    catalog, encoder = index
    release = encoder.hold()
    # The search gives up while its own batch is being encoded: the work is done anyway, so
    # its vector serves the next search of the same text (no second encoding under overload).
    shed = await asyncio.wait_for(
        catalog.retrieve("red wine", CandidateFilters(), limit=10, options=TextQueryOptions(dense_wait=0.05)), 10
    )
    assert shed.degraded == ("dense",)
    release.set()
    for _ in range(1000):  # the batch finishes on its own, after the search has answered
        if catalog.query_cache.get("red wine") is not None:
            break
        await asyncio.sleep(0.01)
    again = await catalog.retrieve("red wine", CandidateFilters(), limit=10, options=TextQueryOptions(dense_wait=0.05))
    assert again.degraded == ()
    assert encoder.calls == [("query", ["red wine"])]

"""CatalogIndex fusion and its stated degradation: without the text encoder, retrieval answers
from BM25 alone and says so. The encoder here is a deterministic stand-in for the ONNX model
(a bag-of-words hash), so the test needs neither the model nor a database."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from services.common.errors import Unavailable
from services.retrieval.catalog import Product
from services.retrieval.retriever import CandidateFilters, CatalogIndex

DIMENSION = 64


class HashingEncoder:
    """Same protocol as services.common.text_encoder.TextEncoder; `down` makes it fail the way
    an unreachable model server does."""

    version = "hashing/1"
    dimension = DIMENSION

    def __init__(self) -> None:
        self.down = False
        self.calls: list[tuple[str, list[str]]] = []

    async def encode(self, texts, *, kind, timeout=None):
        assert kind in ("query", "passage")
        self.calls.append((kind, list(texts)))
        if self.down:
            raise Unavailable("text_encoder: model server unreachable")
        vectors = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                vectors[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % DIMENSION] += 1.0
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms == 0, 1, norms)


PRODUCTS = [
    Product(id="wine-1", title="Malbec Mendoza red wine", price=19.0, category="Red Wine"),
    Product(id="wine-2", title="Riesling white wine", price=15.0, category="White Wine"),
    Product(id="shoe-1", title="Road running shoe red", price=45.0, category="Running Shoes"),
]


@pytest.fixture
async def index() -> tuple[CatalogIndex, HashingEncoder]:
    encoder = HashingEncoder()
    catalog = CatalogIndex(store=None, encoder=encoder)
    catalog._apply_upsert(PRODUCTS, await encoder.encode([p.embedding_text() for p in PRODUCTS], kind="passage"))
    encoder.calls.clear()
    return catalog, encoder


async def test_search_text_is_encoded_as_a_query(index):
    catalog, encoder = index
    await catalog.retrieve("red wine", CandidateFilters(), limit=10)
    assert encoder.calls == [("query", ["red wine"])]


class RecordingStore:
    """The slice of ProductStore that an upsert touches."""

    async def upsert(self, products, vectors, model_version):
        return len(products), 0


async def test_products_are_encoded_as_passages():
    encoder = HashingEncoder()
    catalog = CatalogIndex(store=RecordingStore(), encoder=encoder)
    await catalog.upsert(PRODUCTS[:1])
    assert encoder.calls == [("passage", [PRODUCTS[0].embedding_text()])]


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
        catalog._apply_delete(["wine-1"])  # what a catalogue sync applying another replica's delete does
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

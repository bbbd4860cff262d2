"""Retrieval test doubles shared by several unit test modules: a deterministic stand-in for the
text encoder (a bag-of-words hash), a small catalogue, and the `index` fixture built from them."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from services.common.errors import Unavailable
from services.retrieval.catalog import Product
from services.retrieval.retriever import CatalogIndex

DIMENSION = 64


class HashingEncoder:
    """Same protocol as services.common.text_encoder.TextEncoder; `down` makes it fail the way
    an unreachable model server does."""

    version = "hashing/1"
    dimension = DIMENSION

    def __init__(self) -> None:
        self.down = False
        self.calls: list[tuple[str, list[str]]] = []
        self.released = None

    def hold(self):
        """From now on every encoding waits until the returned event is set (a backed-up
        encoder); calls are still recorded when they start."""
        import asyncio

        self.released = asyncio.Event()
        return self.released

    async def encode(self, texts, *, kind, timeout=None):
        assert kind in ("query", "passage")
        self.calls.append((kind, list(texts)))
        if self.released is not None:
            await self.released.wait()
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
    catalog.slots.apply_upsert(PRODUCTS, await encoder.encode([p.embedding_text() for p in PRODUCTS], kind="passage"))
    encoder.calls.clear()
    return catalog, encoder

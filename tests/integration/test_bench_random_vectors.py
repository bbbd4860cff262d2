"""`bench search --random-vectors` writes a catalogue retrieval starts from without embedding: the
products, and for every text encoder retrieval runs a unit vector stored under the encoder's
version and the product's content hash (what retrieval's start-up reuses)."""

from __future__ import annotations

import uuid

import numpy as np

from services.cli.bench.random_vectors import encoder_spaces, write_random_catalog
from services.retrieval.retriever import CatalogIndex
from services.retrieval.store import ProductStore
from tests.support.system import create_database


async def test_retrieval_starts_from_the_written_vectors_without_encoding(postgres_url, model_repository):
    import asyncpg

    from services.common.database import create_pool

    url = await create_database(postgres_url, f"random_vectors_{uuid.uuid4().hex[:8]}")
    environ = {"SHELFWISE_MODEL_REPOSITORY": str(model_repository)}
    pool = await create_pool(url)  # applies the migrations, as a service's start-up does
    try:
        seconds, versions = await write_random_catalog(url, environ, 120, seed=3, log=lambda line: None)
        assert seconds > 0 and versions == [version for version, _ in encoder_spaces(environ)]
        connection = await asyncpg.connect(url)
        try:
            assert await connection.fetchval("SELECT count(*) FROM products") == 120
            for version, dimension in encoder_spaces(environ):
                rows = await connection.fetch(
                    "SELECT vector FROM product_embeddings WHERE model_version = $1", version
                )
                vectors = np.stack([np.frombuffer(row["vector"], dtype=np.float32) for row in rows])
                assert vectors.shape == (120, dimension)
                assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        finally:
            await connection.close()

        class NoEncoding:
            """An encoder that fails if asked to embed a product: every product vector must come
            from the cache (the warm-up query retrieval sends at start-up is answered)."""

            def __init__(self, version, dimension):
                self.version, self.dimension = version, dimension

            async def encode(self, texts, *, kind, timeout=None):
                if kind == "passage":
                    raise AssertionError(f"{self.version} asked to embed {len(texts)} products")
                return np.zeros((len(texts), self.dimension), dtype=np.float32)

        (english, *multilingual) = [NoEncoding(v, d) for v, d in encoder_spaces(environ)]
        index = CatalogIndex(ProductStore(pool), english, multilingual_encoder=multilingual[0] if multilingual else None)
        await index.load()
        assert index.size == 120
    finally:
        await pool.close()

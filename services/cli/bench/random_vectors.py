"""`shelfwise bench search --random-vectors`: the synthetic catalogue written straight into
PostgreSQL with a random unit vector cached for each of retrieval's text encoders, so that
retrieval builds its indexes at start-up from the cache and embeds nothing.

Why: importing through retrieval embeds every product, about 67 products/s on this 2-core CPU,
four hours for a million. With random vectors a million-product system is up in the time it
takes to write the rows and build the indexes. What it measures differs in the dense lists:
they rank by random vectors, meaningless for relevance, and HNSW over random points (no clusters
to follow) may cost other than over real embeddings: not measured here. Read its figures as a
comparison of configurations within one run, not as the system's cost at that size. The report
says so. The vectors are seeded: a kept `--data-dir` holds the same ones next run.
"""

from __future__ import annotations

import json
import time
from typing import Mapping

import numpy as np

from services.local.synthetic_catalog import generate_products
from services.retrieval.catalog import chunked

BATCH = 20_000
PRODUCT_COLUMNS = ["id", "title", "description", "brand", "category", "price", "currency", "attributes", "locale", "extra"]
EMBEDDING_COLUMNS = ["product_id", "model_version", "content_hash", "vector"]


def encoder_spaces(environ: Mapping[str, str]) -> list[tuple[str, int]]:
    """(version, dimension) of each text encoder retrieval will run with these settings: the
    versions its cached embeddings are stored under."""
    from services.common.backends import create_backend
    from services.common.config import InferenceSettings, multilingual_encoder_model, text_encoder_model
    from services.common.text_encoder import TextEncoder

    backend = create_backend(InferenceSettings.from_env(environ))
    names = [name for name in (text_encoder_model(environ), multilingual_encoder_model(environ)) if name]
    encoders = [TextEncoder(backend, model_name=name) for name in names]
    return [(encoder.version, encoder.dimension) for encoder in encoders]


async def write_random_catalog(database_url: str, environ: Mapping[str, str], items: int, seed: int,
                               log=print) -> tuple[float, list[str]]:
    """Writes `items` synthetic products and a random vector per product and encoder (COPY, in
    batches); returns (seconds, the encoder versions the vectors are stored under)."""
    import asyncpg

    spaces = encoder_spaces(environ)
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    connection = await asyncpg.connect(database_url)
    try:
        written = 0
        for batch in chunked(generate_products(items, seed), BATCH):
            await connection.copy_records_to_table("products", columns=PRODUCT_COLUMNS, records=[
                (p.id, p.title, p.description, p.brand, p.category, float(p.price), p.currency,
                 json.dumps(dict(p.attributes)), p.locale, json.dumps(dict(p.extra)))
                for p in batch
            ])
            for version, dimension in spaces:
                vectors = rng.standard_normal((len(batch), dimension)).astype(np.float32)
                vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
                await connection.copy_records_to_table("product_embeddings", columns=EMBEDDING_COLUMNS, records=[
                    (p.id, version, p.content_hash(), vector.tobytes()) for p, vector in zip(batch, vectors)
                ])
            written += len(batch)
            log(f"wrote {written:,} of {items:,} products with random vectors")
    finally:
        await connection.close()
    return time.perf_counter() - started, [version for version, _ in spaces]

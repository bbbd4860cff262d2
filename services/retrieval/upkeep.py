"""Upkeep of the catalogue index: building it from PostgreSQL at start-up, upserts and deletes
(written to PostgreSQL, the system of record, then applied to the slot table), and the periodic
sync that applies the writes other replicas made. Product vectors are encoded only when no
cached one fits (per encoder version and content hash)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Sequence

import numpy as np

from services.common.errors import DeadlineExceeded, InvalidArgument, Unavailable
from services.common.tracing import tracer
from services.retrieval.catalog import Product, validate_product
from services.retrieval.metrics import RetrievalMetrics
from services.retrieval.slots import CatalogSlots
from services.retrieval.store import ProductStore

log = logging.getLogger(__name__)
_tracer = tracer(__name__)

MAX_UPSERT = 1_000
# Per batch of 64 texts when encoding products; query encoding keeps the backend's short default.
BULK_ENCODE_TIMEOUT = 120.0
# Change times come from writers' transactions, which may commit a little after they are
# stamped: each sync looks this far behind its watermark (unchanged products are skipped).
SYNC_OVERLAP = timedelta(seconds=30)


class IndexUpkeep:
    def __init__(self, store: ProductStore, slots: CatalogSlots, metrics: RetrievalMetrics):
        self._store = store
        self._slots = slots
        self._metrics = metrics
        self._write_lock = asyncio.Lock()
        self._watermark = datetime.min.replace(tzinfo=timezone.utc) + SYNC_OVERLAP

    async def load(self) -> None:
        """Builds the indexes from PostgreSQL, encoding only products without a cached vector
        (per space: a new encoder version encodes the catalogue once, then it is cached)."""
        slots = self._slots
        self._watermark = await self._store.clock()
        products = await self._store.load_all()
        vectors = []
        encoded_any = False
        for space in slots.spaces:
            cached = await self._store.load_embeddings(space.version)
            matrix = np.zeros((len(products), space.index.dimension), dtype=np.float32)
            missing = []
            for row, product in enumerate(products):
                entry = cached.get(product.id)
                if entry is not None and entry[0] == product.content_hash():
                    matrix[row] = entry[1]
                else:
                    missing.append(row)
            if missing:
                log.info("encoding %d of %d products with %s", len(missing), len(products), space.version)
                encoded = await space.encode_products(
                    [products[row].embedding_text() for row in missing], timeout=BULK_ENCODE_TIMEOUT
                )
                matrix[missing] = encoded
                await self._store.save_embeddings([products[row] for row in missing], encoded, space.version)
                encoded_any = True
            vectors.append(matrix)
        async with self._write_lock:
            slots.apply_upsert(products, *vectors)
            self._metrics.index_size(slots.size)
        if not encoded_any:
            # Nothing was encoded, so the encoders' models are not loaded yet: load them now,
            # before SERVING, not in the first search (it blocked the service for seconds there,
            # long enough for the gateway's health check to mark retrieval down).
            for space in slots.spaces:
                try:
                    await space.encoder.encode(["warm-up"], kind="query")
                except (Unavailable, DeadlineExceeded) as error:  # searches degrade until it is back
                    log.warning("text encoder %s not warmed up: %s", space.version, error)
        log.info("catalogue index ready: %d products", slots.size)

    async def upsert(self, products: Sequence[Product]) -> tuple[int, int]:
        if not products:
            raise InvalidArgument("products", "must contain at least one product")
        if len(products) > MAX_UPSERT:
            raise InvalidArgument("products", f"must contain at most {MAX_UPSERT} products per call, got {len(products)}")
        seen: set[str] = set()
        for index, product in enumerate(products):
            validate_product(product, f"products[{index}]")
            if product.id in seen:
                raise InvalidArgument(f"products[{index}].id", f"duplicates an earlier product id {product.id!r}")
            seen.add(product.id)
        slots = self._slots
        vectors, missing = slots.indexed_vectors(products)
        if missing:
            with _tracer.start_as_current_span("retrieval.encode_products") as span:
                span.set_attribute("shelfwise.products.encoded", len(missing))
                span.set_attribute("shelfwise.products.reused", len(products) - len(missing))
                texts = [products[row].embedding_text() for row in missing]
                for space, matrix in zip(slots.spaces, vectors):
                    matrix[missing] = await space.encode_products(texts, timeout=BULK_ENCODE_TIMEOUT)
        async with self._write_lock:
            inserted, updated, listed = await self._store.upsert(products, dict(zip(slots.encoder_versions, vectors)))
            # The index holds what the store holds: a product imported without a listing time
            # is listed at its first import (as a sync from another replica reads it).
            products = [replace(p, listed_at=listed.get(p.id, p.listed_at)) for p in products]
            slots.apply_upsert(products, *vectors)
            self._metrics.index_size(slots.size)
        self._metrics.upserted(inserted, updated)
        return inserted, updated

    async def delete(self, product_ids: Sequence[str]) -> tuple[int, list[str]]:
        if not product_ids:
            raise InvalidArgument("product_ids", "must contain at least one id")
        if len(product_ids) > MAX_UPSERT:
            raise InvalidArgument("product_ids", f"must contain at most {MAX_UPSERT} ids per call")
        async with self._write_lock:
            deleted = await self._store.delete(product_ids)
            self._slots.apply_delete(deleted)
            self._metrics.index_size(self._slots.size)
        self._metrics.deleted(len(deleted))
        deleted_set = set(deleted)
        return len(deleted), [product_id for product_id in dict.fromkeys(product_ids) if product_id not in deleted_set]

    async def sync(self) -> int:
        """Applies the catalogue writes other replicas made since the last sync (their upserts
        carry cached embeddings, so nothing is re-encoded); returns how many products changed."""
        slots = self._slots
        # Read under the write lock: a local upsert or delete landing between the read and the
        # apply would otherwise be overwritten by the older state just read.
        async with self._write_lock:
            changed, deleted, latest = await self._store.changes_since(
                self._watermark - SYNC_OVERLAP, slots.encoder_versions
            )
            upserts, cached = [], []
            for product, embeddings in changed:
                slot = slots.slot_of.get(product.id)
                if slot is not None and slots.products[slot] == product:
                    continue
                upserts.append(product)
                cached.append(embeddings)
            vectors = []
            for space in slots.spaces:
                rows, missing = [], []
                for i, (product, embeddings) in enumerate(zip(upserts, cached)):
                    content_hash, vector = embeddings.get(space.version, (None, None))
                    if vector is None or content_hash != product.content_hash():
                        missing.append(i)
                    rows.append(vector)
                if missing:
                    encoded = await space.encode_products(
                        [upserts[i].embedding_text() for i in missing], timeout=BULK_ENCODE_TIMEOUT
                    )
                    for row, i in enumerate(missing):
                        rows[i] = encoded[row]
                if upserts:
                    vectors.append(np.stack(rows).astype(np.float32))
            if upserts:
                slots.apply_upsert(upserts, *vectors)
            still_there = {product.id for product, _ in changed}
            gone = [pid for pid in dict.fromkeys(deleted) if pid in slots.slot_of and pid not in still_there]
            if gone:
                slots.apply_delete(gone)
        if latest is not None:
            self._watermark = max(self._watermark, latest)
        return len(upserts) + len(gone)

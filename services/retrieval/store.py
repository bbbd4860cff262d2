"""The catalogue's system of record in PostgreSQL: products and cached embeddings."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Iterable, Mapping, Sequence

import asyncpg
import numpy as np

from services.retrieval.catalog import Product

_UPSERT = """
INSERT INTO products (id, title, description, brand, category, price, currency, attributes, locale, extra,
                      in_stock, listed_at, updated_at)
SELECT p.id, p.title, p.description, p.brand, p.category, p.price, p.currency, p.attributes::jsonb, p.locale,
       p.extra::jsonb, p.in_stock, p.listed_at, now()
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::text[], $8::text[],
            $9::text[], $10::text[], $11::bool[], $12::timestamptz[])
     AS p(id, title, description, brand, category, price, currency, attributes, locale, extra, in_stock, listed_at)
ON CONFLICT (id) DO UPDATE SET
    title = EXCLUDED.title, description = EXCLUDED.description, brand = EXCLUDED.brand,
    category = EXCLUDED.category, price = EXCLUDED.price, currency = EXCLUDED.currency,
    attributes = EXCLUDED.attributes, locale = EXCLUDED.locale, extra = EXCLUDED.extra,
    in_stock = EXCLUDED.in_stock, listed_at = EXCLUDED.listed_at, updated_at = now()
RETURNING id, (xmax = 0) AS inserted, COALESCE(listed_at, created_at) AS listed
"""

# Every product column the index reads, listed_at as the effective listing time.
_LOAD_ALL = (
    "SELECT id, title, description, brand, category, price, currency, attributes::text AS attributes, locale,"
    " extra::text AS extra, in_stock, COALESCE(listed_at, created_at) AS listed FROM products ORDER BY id"
)
_CHANGED_SINCE = (
    "SELECT id, title, description, brand, category, price, currency, attributes::text AS attributes, locale,"
    " extra::text AS extra, in_stock, COALESCE(listed_at, created_at) AS listed, updated_at"
    " FROM products WHERE updated_at > $1"
)

_UPSERT_EMBEDDINGS = """
INSERT INTO product_embeddings (product_id, model_version, content_hash, vector)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])
ON CONFLICT (product_id, model_version) DO UPDATE SET
    content_hash = EXCLUDED.content_hash, vector = EXCLUDED.vector
"""


def _embedding_columns(products: Sequence[Product], vectors: np.ndarray, model_version: str) -> list[list]:
    """The arguments of _UPSERT_EMBEDDINGS for one encoder version's vectors of `products`."""
    return [
        [p.id for p in products],
        [model_version] * len(products),
        [p.content_hash() for p in products],
        [np.asarray(v, dtype=np.float32).tobytes() for v in vectors],
    ]


def _row_to_product(row: asyncpg.Record) -> Product:
    return Product(
        id=row["id"],
        title=row["title"],
        description=row["description"],
        brand=row["brand"],
        category=row["category"],
        price=float(row["price"]),
        currency=row["currency"],
        attributes=json.loads(row["attributes"]),
        locale=row["locale"],
        extra=json.loads(row["extra"]),
        in_stock=row["in_stock"],
        listed_at=row["listed"].isoformat(),
    )


class ProductStore:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool

    async def clock(self) -> datetime:
        """The database's current time: change times are compared on its clock, not ours."""
        return await self._pool.fetchval("SELECT clock_timestamp()")

    async def load_all(self) -> list[Product]:
        rows = await self._pool.fetch(_LOAD_ALL)
        return [_row_to_product(row) for row in rows]

    async def load_embeddings(self, model_version: str) -> dict[str, tuple[str, np.ndarray]]:
        rows = await self._pool.fetch(
            "SELECT product_id, content_hash, vector FROM product_embeddings WHERE model_version = $1",
            model_version,
        )
        return {row["product_id"]: (row["content_hash"], np.frombuffer(row["vector"], dtype=np.float32)) for row in rows}

    async def upsert(
        self, products: Sequence[Product], vectors: Mapping[str, np.ndarray]
    ) -> tuple[int, int, dict[str, str]]:
        """Writes products and their embeddings (encoder version -> vectors, one row per
        product) in one transaction; returns (inserted, updated, id -> effective listing time
        (the given one, else the first import's), RFC 3339)."""
        columns = [
            [p.id for p in products],
            [p.title for p in products],
            [p.description for p in products],
            [p.brand for p in products],
            [p.category for p in products],
            [p.price for p in products],
            [p.currency for p in products],
            [json.dumps(dict(p.attributes), ensure_ascii=False) for p in products],
            [p.locale for p in products],
            [json.dumps(dict(p.extra), ensure_ascii=False) for p in products],
            [p.in_stock for p in products],
            [datetime.fromisoformat(p.listed_at) if p.listed_at else None for p in products],
        ]
        async with self._pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(_UPSERT, *columns)
            for model_version, matrix in vectors.items():
                await connection.execute(_UPSERT_EMBEDDINGS, *_embedding_columns(products, matrix, model_version))
        inserted = sum(1 for row in rows if row["inserted"])
        return inserted, len(rows) - inserted, {row["id"]: row["listed"].isoformat() for row in rows}

    async def save_embeddings(self, products: Sequence[Product], vectors: np.ndarray, model_version: str) -> None:
        await self._pool.execute(_UPSERT_EMBEDDINGS, *_embedding_columns(products, vectors, model_version))

    async def delete(self, product_ids: Iterable[str]) -> list[str]:
        """Deletes, recording each deletion for the other replicas; returns the ids that existed."""
        async with self._pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(
                "DELETE FROM products WHERE id = ANY($1::text[]) RETURNING id", list(product_ids)
            )
            deleted = [row["id"] for row in rows]
            if deleted:
                await connection.execute(
                    "INSERT INTO product_deletions (product_id) SELECT unnest($1::text[])", deleted
                )
        return deleted

    async def changes_since(
        self, since: datetime, model_versions: Sequence[str]
    ) -> tuple[list[tuple[Product, dict[str, tuple[str, np.ndarray]]]], list[str], datetime | None]:
        """Products written and ids deleted after `since`, each product with its cached
        embeddings of these encoder versions (version -> (content hash, vector); absent when
        none is cached), and the latest change time seen."""
        rows = await self._pool.fetch(_CHANGED_SINCE, since)
        embeddings: dict[str, dict[str, tuple[str, np.ndarray]]] = {}
        if rows:
            cached = await self._pool.fetch(
                "SELECT product_id, model_version, content_hash, vector FROM product_embeddings"
                " WHERE product_id = ANY($1::text[]) AND model_version = ANY($2::text[])",
                [row["id"] for row in rows],
                list(model_versions),
            )
            for row in cached:
                embeddings.setdefault(row["product_id"], {})[row["model_version"]] = (
                    row["content_hash"], np.frombuffer(row["vector"], dtype=np.float32)
                )
        deletions = await self._pool.fetch(
            "SELECT product_id, deleted_at FROM product_deletions WHERE deleted_at > $1", since
        )
        changed = [(_row_to_product(row), embeddings.get(row["id"], {})) for row in rows]
        times = [row["updated_at"] for row in rows] + [row["deleted_at"] for row in deletions]
        return changed, [row["product_id"] for row in deletions], max(times, default=None)

"""Keeps the query understander's catalogue vocabulary current.

The vocabulary (words, brands, categories, attribute values) comes from the products table;
it is rebuilt in the background when the catalogue changes, and swapped in whole, so a request
always sees one consistent vocabulary and never waits for a rebuild.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Awaitable, Callable

import asyncpg

from services.common.background import Periodic
from services.query_understanding.prices import CurrencyRates
from services.query_understanding.understanding import QueryUnderstander
from services.query_understanding.vocabulary import CatalogVocabulary

log = logging.getLogger(__name__)

# What a vocabulary is read from: the products table's size and latest update. Its text form is
# what Understand reports as vocabulary_version and what the local stack compares after an import.
CATALOG_STATE_SQL = "SELECT count(*), max(updated_at) FROM products"


def catalog_version(count: int, latest_update) -> str:
    """"<products>@<latest update, ISO 8601>", e.g. "120@2026-12-05T06:40:00.123456+00:00"."""
    return f"{count}@{latest_update.isoformat() if latest_update is not None else '-'}"


class CatalogVocabularySource:
    def __init__(
        self, pool: asyncpg.Pool, refresh_seconds: float, translate_queries: bool = True,
        currency_rates: CurrencyRates = CurrencyRates({}),
    ):
        self._pool = pool
        self._version: tuple | None = None
        # The version of the vocabulary in use ("" until the first read of the catalogue).
        self.version = ""
        self._translate = translate_queries
        self._rates = currency_rates
        self.understander = QueryUnderstander(CatalogVocabulary.empty(), translate=translate_queries, currency_rates=currency_rates)
        self._refresher = Periodic("vocabulary refresh", self.refresh, refresh_seconds, run_first=False)
        # Called with (products, version) after each rebuild: what else is built from the same
        # read of the catalogue (the autocomplete index, suggestion_source.py).
        self.listeners: list[Callable[[list[dict], str], Awaitable[None]]] = []

    async def refresh(self) -> bool:
        """Rebuilds when the catalogue changed; returns whether it did."""
        version = tuple(await self._pool.fetchrow(CATALOG_STATE_SQL))
        if version == self._version:
            return False
        rows = await self._pool.fetch(
            "SELECT title, description, brand, category, currency, attributes::text AS attributes FROM products"
        )
        products = [{**dict(row), "attributes": json.loads(row["attributes"])} for row in rows]
        vocabulary = await asyncio.to_thread(CatalogVocabulary.from_products, products)
        understander = QueryUnderstander(vocabulary, translate=self._translate, currency_rates=self._rates)
        # Indexes build on first use; build them here, off the event loop, not in a request.
        await asyncio.to_thread(understander.warm_up)
        self.understander = understander
        self._version = version
        self.version = catalog_version(*version)
        log.info("vocabulary rebuilt from %d products", len(products))
        for listener in self.listeners:
            await listener(products, self.version)
        return True

    def start(self) -> None:
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()

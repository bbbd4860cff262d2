"""Keeps the autocomplete index (`suggestions.SuggestionIndex`) current.

Two inputs, each refreshed on its own clock and the index rebuilt (off the event loop) and
swapped in whole when either changes, so a request always sees one consistent index:

- the catalogue: handed over by `CatalogVocabularySource` whenever it rebuilds the vocabulary
  (the same read of the products table, no second one);
- the query log: searches (impressions of the search surface) that led to an interaction (a
  click, add-to-cart or purchase: `interactions` by request id), over the last `query_days`
  days, re-read every `query_log_seconds`. Privacy: a query is suggested only when at least
  `min_users` distinct shoppers searched it and interacted (a shopper is the user id, or for
  someone not signed in the session id; searches with neither are not counted), so nothing one
  shopper typed (a name, an order number) can come back to another. The grouping is done in SQL
  on lower-cased, whitespace-collapsed text; spellings that `normalize` merges further are
  summed afterwards, each having passed the threshold on its own (never fewer shoppers).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from services.common.background import Periodic
from services.common.text import normalize
from services.query_understanding.suggestions import (
    MAX_SUGGESTION_CHARS,
    Candidate,
    Ranking,
    SuggestionIndex,
    catalogue_candidates,
    query_candidates,
)

log = logging.getLogger(__name__)

# $1 shoppers at least, $2 days back, $3 longest query, $4 most queries kept (the most searched).
# The time bounds on both tables let PostgreSQL skip old monthly partitions.
QUERY_LOG_SQL = """
SELECT q.query, count(DISTINCT q.request_id) AS searches
FROM (
    SELECT i.request_id,
           lower(regexp_replace(btrim(i.query), '\\s+', ' ', 'g')) AS query,
           CASE WHEN i.user_id <> '' THEN 'u:' || i.user_id
                WHEN i.session_id <> '' THEN 's:' || i.session_id END AS shopper
    FROM impressions i
    WHERE i.surface = 'search'
      AND i.query <> ''
      AND char_length(i.query) <= $3
      AND i.occurred_at > now() - make_interval(days => $2)
      AND EXISTS (
          SELECT 1 FROM interactions x
          WHERE x.request_id = i.request_id AND x.occurred_at > now() - make_interval(days => $2)
      )
) q
WHERE q.shopper IS NOT NULL AND q.query <> ''
GROUP BY q.query
HAVING count(DISTINCT q.shopper) >= $1
ORDER BY searches DESC, q.query
LIMIT $4
"""


@dataclass(frozen=True)
class SuggestSettings:
    """SHELFWISE_SUGGEST_MIN_USERS, SHELFWISE_SUGGEST_QUERY_LOG_SECONDS, SHELFWISE_SUGGEST_QUERY_DAYS,
    SHELFWISE_SUGGEST_MAX_QUERIES (see `services.query_understanding.config`)."""

    min_users: int = 5
    query_log_seconds: float = 300.0
    query_days: int = 90
    max_queries: int = 50_000


def merged_queries(rows: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """(normalized query, searches) with spellings that normalize alike summed, most searched first."""
    merged: dict[str, int] = {}
    for query, searches in rows:
        key = normalize(query)
        if key:
            merged[key] = merged.get(key, 0) + int(searches)
    return sorted(merged.items(), key=lambda item: (-item[1], item[0]))


class SuggestionSource:
    def __init__(self, pool: asyncpg.Pool, settings: SuggestSettings = SuggestSettings(), ranking: Ranking = Ranking()):
        self._pool = pool
        self._settings = settings
        self._ranking = ranking
        self.index = SuggestionIndex.empty()
        self._catalogue: list[Candidate] = []
        self._catalog_version = ""
        self._queries: list[tuple[str, int]] = []
        self._query_rows: tuple | None = None
        # Rebuilds one at a time, each from the latest inputs: the last one swapped in is current.
        self._building = asyncio.Lock()
        self._refresher = Periodic("query log refresh", self.refresh_queries, settings.query_log_seconds, run_first=False)

    async def on_catalog(self, products: Sequence[Mapping[str, Any]], version: str) -> None:
        """The catalogue changed (called by `CatalogVocabularySource` with the products it read)."""
        self._catalogue = await asyncio.to_thread(catalogue_candidates, products)
        self._catalog_version = version
        await self._rebuild()

    async def refresh_queries(self) -> bool:
        """Reads the query log again; rebuilds the index when it changed. Returns whether it did."""
        s = self._settings
        rows = await self._pool.fetch(QUERY_LOG_SQL, s.min_users, s.query_days, MAX_SUGGESTION_CHARS, s.max_queries)
        key = tuple((row["query"], row["searches"]) for row in rows)
        if key == self._query_rows:
            return False
        self._query_rows = key
        self._queries = merged_queries(key)
        await self._rebuild()
        return True

    async def _rebuild(self) -> None:
        async with self._building:
            digest = hashlib.sha256(repr(self._queries).encode()).hexdigest()[:12]
            version = f"{self._catalog_version or '-'};queries={len(self._queries)}@{digest}"
            candidates = self._catalogue + query_candidates(self._queries)
            self.index = await asyncio.to_thread(SuggestionIndex, candidates, self._ranking, version)
            log.info("suggestion index rebuilt: %d texts (%s)", len(self.index), version)

    def start(self) -> None:
        self._refresher.start()

    async def stop(self) -> None:
        await self._refresher.stop()

"""Event reads from PostgreSQL: engagement metrics per request, experiment arm or model
version; a shopper's recent history (their user id hashed as the writes hash it); and
popularity per product."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import asyncpg

from services.events.pseudonyms import UserIdPseudonyms

_METRICS = """
WITH shown AS (
    SELECT {key} AS key, count(*) AS requests, sum(cardinality(product_ids)) AS impressions
    FROM impressions
    WHERE occurred_at >= $1 AND occurred_at < $2 AND ($3 = '' OR request_id = $3)
    GROUP BY 1
), acted AS (
    SELECT {key_i} AS key,
           count(*) FILTER (WHERE x.type = 'click') AS clicks,
           count(*) FILTER (WHERE x.type = 'add_to_cart') AS add_to_carts,
           count(*) FILTER (WHERE x.type = 'purchase') AS purchases,
           coalesce(sum(x.value) FILTER (WHERE x.type = 'purchase'), 0) AS revenue
    FROM interactions x JOIN impressions i ON i.request_id = x.request_id
    WHERE i.occurred_at >= $1 AND i.occurred_at < $2 AND ($3 = '' OR i.request_id = $3)
    GROUP BY 1
)
SELECT s.key, s.requests, s.impressions, coalesce(a.clicks, 0) AS clicks,
       coalesce(a.add_to_carts, 0) AS add_to_carts, coalesce(a.purchases, 0) AS purchases,
       coalesce(a.revenue, 0) AS revenue
FROM shown s LEFT JOIN acted a USING (key)
ORDER BY s.requests DESC, s.key
LIMIT $4
"""

GROUP_KEYS = {"request": "request_id", "experiment_arm": "experiment_arm", "model_version": "model_version"}
# One query per grouping, built from the fixed table above: no query text comes from input.
_METRICS_BY_GROUP = {group: _METRICS.format(key=key, key_i=f"i.{key}") for group, key in GROUP_KEYS.items()}


@dataclass(frozen=True)
class MetricsRow:
    key: str
    requests: int
    impressions: int
    clicks: int
    add_to_carts: int
    purchases: int
    revenue: float

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    @property
    def conversion_rate(self) -> float:
        return self.purchases / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class HistoryEntry:
    product_id: str
    type: str
    occurred_at: datetime


# Which of several interactions with one product in a row describes the step.
_STRENGTH = {"click": 0, "add_to_cart": 1, "purchase": 2}


def collapse_history(newest_first: Sequence[HistoryEntry], limit: int) -> list[HistoryEntry]:
    """Oldest-first history with runs of the same product (click, add-to-cart, purchase of one
    item) merged into one entry of the strongest type; the most recent `limit` entries."""
    steps: list[HistoryEntry] = []
    for entry in reversed(newest_first):
        if steps and steps[-1].product_id == entry.product_id:
            previous = steps[-1]
            strongest = max(previous.type, entry.type, key=_STRENGTH.__getitem__)
            steps[-1] = HistoryEntry(entry.product_id, strongest, max(previous.occurred_at, entry.occurred_at))
        else:
            steps.append(entry)
    return steps[-limit:]


@dataclass(frozen=True)
class PopularProduct:
    product_id: str
    clicks: int
    add_to_carts: int
    purchases: int

    @property
    def score(self) -> float:
        return self.clicks + 3 * self.add_to_carts + 10 * self.purchases


class EventQueries:
    def __init__(self, pool: asyncpg.Pool, pseudonyms: UserIdPseudonyms | None = None):
        if pseudonyms is None:
            from services.events.config import user_id_key

            pseudonyms = UserIdPseudonyms(user_id_key())
        self._pseudonym = pseudonyms
        self._pool = pool

    async def metrics(
        self, group_by: str, request_id: str, since: datetime | None, until: datetime | None, limit: int
    ) -> list[MetricsRow]:
        sql = _METRICS_BY_GROUP[group_by]
        since = since or datetime(1970, 1, 1, tzinfo=timezone.utc)
        until = until or datetime.now(timezone.utc) + timedelta(days=1)
        rows = await self._pool.fetch(sql, since, until, request_id, limit)
        return [
            MetricsRow(
                key=row["key"],
                requests=row["requests"],
                impressions=int(row["impressions"] or 0),
                clicks=row["clicks"],
                add_to_carts=row["add_to_carts"],
                purchases=row["purchases"],
                revenue=float(row["revenue"]),
            )
            for row in rows
        ]

    async def history(self, user_id: str, session_id: str, limit: int) -> list[HistoryEntry]:
        """The shopper's recent interactions by user id or session id, oldest first (see
        `collapse_history`). Reads a few times `limit` rows so that merged runs still fill it."""
        rows = await self._pool.fetch(
            """
            SELECT product_id, type, occurred_at FROM interactions
            WHERE ($1 <> '' AND user_id = $1) OR ($2 <> '' AND session_id = $2)
            ORDER BY occurred_at DESC, received_at DESC, event_id DESC
            LIMIT $3
            """,
            self._pseudonym(user_id),
            session_id,
            limit * 4,
        )
        return collapse_history([HistoryEntry(r["product_id"], r["type"], r["occurred_at"]) for r in rows], limit)

    async def popular(
        self, window_days: int, limit: int, window: tuple[datetime, datetime] | None = None
    ) -> list[PopularProduct]:
        """Engagement per product over the last `window_days`, or over a fixed `window`
        [since, until) (popularity frozen at a point in time)."""
        since, until = window or (None, None)
        rows = await self._pool.fetch(
            """
            SELECT product_id,
                   count(*) FILTER (WHERE type = 'click') AS clicks,
                   count(*) FILTER (WHERE type = 'add_to_cart') AS add_to_carts,
                   count(*) FILTER (WHERE type = 'purchase') AS purchases
            FROM interactions
            WHERE CASE WHEN $3::timestamptz IS NULL THEN occurred_at >= now() - make_interval(days => $1)
                       ELSE occurred_at >= $3 AND occurred_at < $4 END
            GROUP BY product_id
            ORDER BY count(*) FILTER (WHERE type = 'click') + 3 * count(*) FILTER (WHERE type = 'add_to_cart')
                     + 10 * count(*) FILTER (WHERE type = 'purchase') DESC, product_id
            LIMIT $2
            """,
            window_days,
            limit,
            since,
            until,
        )
        return [PopularProduct(r["product_id"], r["clicks"], r["add_to_carts"], r["purchases"]) for r in rows]

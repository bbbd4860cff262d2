"""Events in PostgreSQL: idempotent inserts, attribution checks and metrics queries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import asyncpg

from services.common.errors import InvalidArgument, NotFound
from services.common.metrics import EventsMetrics
from services.events.model import Impression, Interaction

_INSERT_IMPRESSIONS = """
INSERT INTO impressions (event_id, request_id, occurred_at, user_id, session_id, surface, query, product_ids,
                         first_position, model_version, experiment_arm, features, interleaving_arms)
SELECT e.event_id, e.request_id, e.occurred_at, e.user_id, e.session_id, e.surface, e.query,
       string_to_array(e.product_ids, chr(31)), e.first_position, e.model_version, e.experiment_arm,
       e.features::jsonb, string_to_array(e.interleaving_arms, chr(31))
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
            $9::int[], $10::text[], $11::text[], $12::text[], $13::text[])
     AS e(event_id, request_id, occurred_at, user_id, session_id, surface, query, product_ids, first_position,
          model_version, experiment_arm, features, interleaving_arms)
ON CONFLICT DO NOTHING
RETURNING event_id
"""

_INSERT_INTERACTIONS = """
INSERT INTO interactions (event_id, type, request_id, product_id, position, occurred_at, user_id, session_id,
                          quantity, value)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[], $7::text[],
                     $8::text[], $9::int[], $10::float8[])
ON CONFLICT (event_id) DO NOTHING
RETURNING event_id
"""

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


class EventStore:
    def __init__(self, pool: asyncpg.Pool):
        self._pool = pool
        self._metrics = EventsMetrics()

    async def write(self, impressions: Sequence[Impression], interactions: Sequence[Interaction]) -> tuple[int, int]:
        """Stores a batch atomically; returns (accepted, duplicates). Interactions must point at
        an impression (in this batch or stored earlier) that showed the product at that position."""
        async with self._pool.acquire() as connection, connection.transaction():
            accepted_impressions = accepted_interactions = 0
            if impressions:
                rows = await connection.fetch(
                    _INSERT_IMPRESSIONS,
                    [e.event_id for e in impressions],
                    [e.request_id for e in impressions],
                    [e.occurred_at for e in impressions],
                    [e.user_id for e in impressions],
                    [e.session_id for e in impressions],
                    [e.surface for e in impressions],
                    [e.query for e in impressions],
                    ["\x1f".join(e.product_ids) for e in impressions],
                    [e.first_position for e in impressions],
                    [e.model_version for e in impressions],
                    [e.experiment_arm for e in impressions],
                    [json.dumps(list(e.features)) for e in impressions],
                    # Arrays of arrays do not unnest row by row: joined here, split in SQL.
                    ["\x1f".join(e.interleaving_arms) for e in impressions],
                )
                accepted_impressions = len(rows)
            if interactions:
                await self._check_attribution(connection, interactions)
                rows = await connection.fetch(
                    _INSERT_INTERACTIONS,
                    [e.event_id for e in interactions],
                    [e.type for e in interactions],
                    [e.request_id for e in interactions],
                    [e.product_id for e in interactions],
                    [e.position for e in interactions],
                    [e.occurred_at for e in interactions],
                    [e.user_id for e in interactions],
                    [e.session_id for e in interactions],
                    [e.quantity for e in interactions],
                    [e.value for e in interactions],
                )
                accepted_interactions = len(rows)
        # Committed: count what was stored and what was already there.
        self._metrics.ingested("impression", accepted_impressions, len(impressions) - accepted_impressions)
        self._metrics.ingested("interaction", accepted_interactions, len(interactions) - accepted_interactions)
        accepted = accepted_impressions + accepted_interactions
        return accepted, len(impressions) + len(interactions) - accepted

    @staticmethod
    async def _check_attribution(connection: asyncpg.Connection, interactions: Sequence[Interaction]) -> None:
        request_ids = sorted({e.request_id for e in interactions})
        rows = await connection.fetch(
            "SELECT request_id, product_ids, first_position FROM impressions WHERE request_id = ANY($1::text[])",
            request_ids,
        )
        shown = {row["request_id"]: (row["product_ids"], row["first_position"]) for row in rows}
        for index, event in enumerate(interactions):
            where = f"interactions[{index}]"
            if event.request_id not in shown:
                raise NotFound(f"{where}.request_id: no impression was logged for request id {event.request_id!r}")
            product_ids, first_position = shown[event.request_id]
            offset = event.position - first_position
            if not 0 <= offset < len(product_ids) or product_ids[offset] != event.product_id:
                raise InvalidArgument(
                    f"{where}.position",
                    f"product {event.product_id!r} was not shown at position {event.position} of request "
                    f"{event.request_id!r}",
                )

    async def metrics(
        self, group_by: str, request_id: str, since: datetime | None, until: datetime | None, limit: int
    ) -> list[MetricsRow]:
        key = GROUP_KEYS[group_by]  # from a fixed table, never from input
        sql = _METRICS.format(key=key, key_i=f"i.{key}")
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
            user_id,
            session_id,
            limit * 4,
        )
        return collapse_history([HistoryEntry(r["product_id"], r["type"], r["occurred_at"]) for r in rows], limit)

    async def popular(self, window_days: int, limit: int) -> list[PopularProduct]:
        rows = await self._pool.fetch(
            """
            SELECT product_id,
                   count(*) FILTER (WHERE type = 'click') AS clicks,
                   count(*) FILTER (WHERE type = 'add_to_cart') AS add_to_carts,
                   count(*) FILTER (WHERE type = 'purchase') AS purchases
            FROM interactions
            WHERE occurred_at >= now() - make_interval(days => $1)
            GROUP BY product_id
            ORDER BY count(*) FILTER (WHERE type = 'click') + 3 * count(*) FILTER (WHERE type = 'add_to_cart')
                     + 10 * count(*) FILTER (WHERE type = 'purchase') DESC, product_id
            LIMIT $2
            """,
            window_days,
            limit,
        )
        return [PopularProduct(r["product_id"], r["clicks"], r["add_to_carts"], r["purchases"]) for r in rows]

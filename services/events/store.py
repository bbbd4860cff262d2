"""Events in PostgreSQL: idempotent bulk writes (COPY through a staging table), retried across
lost connections, attribution checks and metrics queries.

User ids never reach the tables in clear: the store keeps a keyed hash of each
(`UserIdPseudonyms`, HMAC-SHA256 with SHELFWISE_USER_ID_KEY) and hashes the id a history read
asks for the same way, so a shopper's events still group together while the analytics tables
hold no id that leads back to the shop's customer records without the key. Rows stored
before pseudonyms existed are hashed in place by `pseudonymise_stored_user_ids`
(migration 0007 explains why not in SQL)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

import asyncpg

from services.common.errors import InvalidArgument, NotFound, ShelfwiseError, Unavailable
from services.events.metrics import EventsMetrics
from services.events.model import Impression, Interaction

log = logging.getLogger(__name__)

# Both write paths stage a batch (COPY into a temporary table, or unnest of arrays), then
# store each event whose idempotency key is new: the key goes into the unpartitioned
# impression_keys/interaction_keys tables first (see migration 0006 for why), and only events
# whose key was inserted now reach the partitioned table. DISTINCT ON keeps the first of
# repeated event ids within one batch.
_IMPRESSION_COLUMNS = (
    "event_id", "request_id", "occurred_at", "user_id", "session_id", "surface", "query", "product_ids",
    "first_position", "model_version", "experiment_arm", "features", "interleaving_arms", "propensities",
    "exploration_pool",
)
# The idempotency keys carry occurred_at so that retention can prune them with their events.
_IMPRESSION_KEY_COLUMNS = ("event_id", "request_id", "occurred_at")
_INTERACTION_KEY_COLUMNS = ("event_id", "occurred_at")
_INTERACTION_COLUMNS = (
    "event_id", "type", "request_id", "product_id", "position", "occurred_at", "user_id", "session_id", "quantity",
    "value",
)

_STAGE_IMPRESSIONS = """
CREATE TEMPORARY TABLE impressions_in (
    ordinal int, event_id text, request_id text, occurred_at timestamptz, user_id text, session_id text,
    surface text, query text, product_ids text[], first_position int, model_version text, experiment_arm text,
    features jsonb, interleaving_arms text[], propensities real[], exploration_pool jsonb
) ON COMMIT DROP
"""

_STAGE_INTERACTIONS = """
CREATE TEMPORARY TABLE interactions_in (
    ordinal int, event_id text, type text, request_id text, product_id text, position int,
    occurred_at timestamptz, user_id text, session_id text, quantity int, value float8
) ON COMMIT DROP
"""

# Arrays of arrays do not unnest row by row: product ids and arms travel joined by chr(31).
_UNNEST_IMPRESSIONS = """(
    SELECT e.ordinal::int AS ordinal, e.event_id, e.request_id, e.occurred_at, e.user_id, e.session_id, e.surface,
           e.query, string_to_array(e.product_ids, chr(31)) AS product_ids, e.first_position, e.model_version,
           e.experiment_arm, e.features::jsonb AS features,
           string_to_array(e.interleaving_arms, chr(31)) AS interleaving_arms,
           string_to_array(e.propensities, chr(31))::real[] AS propensities,
           e.exploration_pool::jsonb AS exploration_pool
    FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[],
                $8::text[], $9::int[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                $15::text[]) WITH ORDINALITY
         AS e(event_id, request_id, occurred_at, user_id, session_id, surface, query, product_ids, first_position,
              model_version, experiment_arm, features, interleaving_arms, propensities, exploration_pool, ordinal)
)"""

_UNNEST_INTERACTIONS = """(
    SELECT e.ordinal::int AS ordinal, e.event_id, e.type, e.request_id, e.product_id, e.position, e.occurred_at,
           e.user_id, e.session_id, e.quantity, e.value
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[], $7::text[],
                $8::text[], $9::int[], $10::float8[]) WITH ORDINALITY
         AS e(event_id, type, request_id, product_id, position, occurred_at, user_id, session_id, quantity, value,
              ordinal)
)"""


PSEUDONYM_PREFIX = "pseudo:"
_PSEUDONYM = re.compile(r"^pseudo:[0-9a-f]{64}$")


class UserIdPseudonyms:
    """user id -> 'pseudo:' + hex HMAC-SHA256(key, user id); the empty id (anonymous) stays empty.

    Every id is hashed, even one that already looks like a pseudonym: otherwise a caller that
    saw a pseudonym in the analytics tables could read that shopper's history with it."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the user id key must be at least 16 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "UserIdPseudonyms(<key>)"

    def __call__(self, user_id: str) -> str:
        if not user_id:
            return ""
        return PSEUDONYM_PREFIX + hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()

    @staticmethod
    def is_pseudonym(value: str) -> bool:
        return bool(_PSEUDONYM.match(value))


def _store_new(table: str, key_table: str, key_columns: tuple[str, ...], columns: tuple[str, ...], source: str) -> str:
    listed = ", ".join(columns)
    return f"""
WITH staged AS (
    SELECT DISTINCT ON (event_id) * FROM {source} AS s ORDER BY event_id, ordinal
), fresh AS (
    INSERT INTO {key_table} ({", ".join(key_columns)})
    SELECT {", ".join(key_columns)} FROM staged ORDER BY ordinal
    ON CONFLICT DO NOTHING
    RETURNING event_id
)
INSERT INTO {table} ({listed})
SELECT {", ".join(f"staged.{c}" for c in columns)} FROM staged JOIN fresh USING (event_id)
ON CONFLICT DO NOTHING
RETURNING event_id
"""


_INSERT_IMPRESSIONS = {
    "copy": _store_new("impressions", "impression_keys", _IMPRESSION_KEY_COLUMNS, _IMPRESSION_COLUMNS, "impressions_in"),
    "unnest": _store_new("impressions", "impression_keys", _IMPRESSION_KEY_COLUMNS, _IMPRESSION_COLUMNS, _UNNEST_IMPRESSIONS),
}
_INSERT_INTERACTIONS = {
    "copy": _store_new("interactions", "interaction_keys", _INTERACTION_KEY_COLUMNS, _INTERACTION_COLUMNS, "interactions_in"),
    "unnest": _store_new("interactions", "interaction_keys", _INTERACTION_KEY_COLUMNS, _INTERACTION_COLUMNS, _UNNEST_INTERACTIONS),
}

# Pseudonymising rows stored in clear (see migration 0007): the distinct clear ids of a table
# since a time, and the update from a staged (raw, pseudonym) mapping.
_CLEAR_USER_IDS = {
    table: f"""
    SELECT DISTINCT user_id FROM {table}
    WHERE user_id <> '' AND user_id !~ '^pseudo:[0-9a-f]{{64}}$' AND occurred_at >= $1
    """
    for table in ("impressions", "interactions")
}
_PSEUDONYMISE = {
    table: f"""
    UPDATE {table} AS t SET user_id = m.pseudonym FROM user_pseudonyms_in AS m
    WHERE t.user_id = m.raw AND t.occurred_at >= $1
    """
    for table in ("impressions", "interactions")
}
_STAGE_PSEUDONYMS = "CREATE TEMPORARY TABLE user_pseudonyms_in (raw text PRIMARY KEY, pseudonym text) ON COMMIT DROP"
PSEUDONYMISE_TASK = "pseudonymise-user-ids"
# Later passes look this far behind the previous one: events of pods still on the previous
# version during a rolling update, with clients' clock skew.
PSEUDONYMISE_OVERLAP = timedelta(days=2)

class ConnectionLost(Exception):
    """A write failed on a connection that is now closed (whatever error asyncpg raised)."""


# Failures of the connection or the server, not of the batch: the same write may succeed on
# a fresh connection (the pool replaces broken ones), and event ids make a repeat harmless
# even when the first attempt did commit before its answer was lost.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionLost,
    OSError,  # cannot connect (refused, socket gone); TimeoutError is one too
    asyncpg.PostgresConnectionError,  # connection lost during the operation
    asyncpg.InterfaceError,  # operation on a connection that was closed
    # A connection that died mid-operation can also fail its reset on release back to the pool
    # with a protocol state error ("cannot switch to state ..."), after a commit or before it.
    asyncpg.InternalClientError,
    asyncpg.CannotConnectNowError,  # starting up or shutting down
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.TooManyConnectionsError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)
RETRY_FIRST_DELAY = 0.05
ACQUIRE_TIMEOUT_SECONDS = 2.0
MIN_ATTEMPT_SECONDS = 1.0
RETRY_MAX_DELAY = 2.0


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


class EventStore:
    def __init__(
        self,
        pool: asyncpg.Pool,
        write_method: str = "copy",
        retry_seconds: float = 30.0,
        pseudonyms: UserIdPseudonyms | None = None,
    ):
        if write_method not in _INSERT_IMPRESSIONS:
            raise ValueError(f"write_method must be one of {', '.join(_INSERT_IMPRESSIONS)}, got {write_method!r}")
        if pseudonyms is None:
            from services.events.config import user_id_key

            pseudonyms = UserIdPseudonyms(user_id_key())
        self._pseudonym = pseudonyms
        self._pool = pool
        self._write_method = write_method
        self._retry_seconds = retry_seconds
        self._metrics = EventsMetrics()

    async def write(
        self,
        impressions: Sequence[Impression],
        interactions: Sequence[Interaction],
        retry_until: float | None = None,
    ) -> tuple[int, int]:
        """Stores a batch atomically; returns (accepted, duplicates). Interactions must point at
        an impression (in this batch or stored earlier) that showed the product at that position.

        A write that fails for the connection's sake (database restarting, connection lost) is
        retried with exponential backoff until `retry_until` (event-loop time; default: now +
        the store's retry window), then fails with Unavailable: a caller that gets an answer
        knows the batch is committed. A retry of a batch whose commit did happen counts its
        events as duplicates."""
        loop = asyncio.get_running_loop()
        if retry_until is None:
            retry_until = loop.time() + self._retry_seconds
        attempt = 0
        while True:
            try:
                # Bounded by what is left of the window (so the caller hears UNAVAILABLE in time
                # rather than DEADLINE_EXCEEDED), but never below a floor: a short window must not
                # cut a healthy write short. A cancelled attempt has not committed, or committed
                # events that a retry finds as duplicates.
                return await asyncio.wait_for(
                    self._write_once(impressions, interactions),
                    timeout=max(MIN_ATTEMPT_SECONDS, retry_until - loop.time()),
                )
            except RETRYABLE_ERRORS as error:
                attempt += 1
                delay = min(RETRY_MAX_DELAY, RETRY_FIRST_DELAY * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
                if loop.time() + delay >= retry_until:
                    raise Unavailable(
                        f"events could not be stored after {attempt} attempt(s): PostgreSQL unreachable "
                        f"({type(error).__name__}: {error})"
                    ) from error
                self._metrics.write_retried(type(error).__name__)
                log.warning("event write failed (%s), retry %d in %.2fs", error, attempt, delay)
                await asyncio.sleep(delay)

    async def _write_once(
        self, impressions: Sequence[Impression], interactions: Sequence[Interaction]
    ) -> tuple[int, int]:
        # Bounded so that a pool that cannot hand out a connection (all broken, reconnecting)
        # becomes a retry within the caller's window, not a wait for asyncpg's 60 s connect timeout.
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_SECONDS) as connection:
            try:
                async with connection.transaction():
                    accepted_impressions = accepted_interactions = 0
                    if impressions:
                        accepted_impressions = await self._store_impressions(connection, impressions)
                    if interactions:
                        await self._check_attribution(connection, interactions)
                        accepted_interactions = await self._store_interactions(connection, interactions)
            except (*RETRYABLE_ERRORS, ShelfwiseError):
                raise
            except Exception as error:
                # A connection that dies mid-COPY can surface as an asyncpg internal state error;
                # whatever the exception, a closed connection means the write may be retried.
                if connection.is_closed():
                    raise ConnectionLost(f"{type(error).__name__}: {error}") from error
                raise
        # Committed: count what was stored and what was already there.
        self._metrics.ingested("impression", accepted_impressions, len(impressions) - accepted_impressions)
        self._metrics.ingested("interaction", accepted_interactions, len(interactions) - accepted_interactions)
        accepted = accepted_impressions + accepted_interactions
        return accepted, len(impressions) + len(interactions) - accepted

    async def _store_impressions(self, connection: asyncpg.Connection, events: Sequence[Impression]) -> int:
        if self._write_method == "copy":
            await connection.execute(_STAGE_IMPRESSIONS)
            await connection.copy_records_to_table(
                "impressions_in",
                columns=("ordinal", *_IMPRESSION_COLUMNS),
                records=[
                    (
                        ordinal, e.event_id, e.request_id, e.occurred_at, self._pseudonym(e.user_id), e.session_id, e.surface,
                        e.query, list(e.product_ids), e.first_position, e.model_version, e.experiment_arm,
                        json.dumps(list(e.features)), list(e.interleaving_arms), list(e.propensities),
                        json.dumps([list(entry) for entry in e.exploration_pool]),
                    )
                    for ordinal, e in enumerate(events)
                ],
            )
            rows = await connection.fetch(_INSERT_IMPRESSIONS["copy"])
        else:
            rows = await connection.fetch(
                _INSERT_IMPRESSIONS["unnest"],
                [e.event_id for e in events],
                [e.request_id for e in events],
                [e.occurred_at for e in events],
                [self._pseudonym(e.user_id) for e in events],
                [e.session_id for e in events],
                [e.surface for e in events],
                [e.query for e in events],
                ["\x1f".join(e.product_ids) for e in events],
                [e.first_position for e in events],
                [e.model_version for e in events],
                [e.experiment_arm for e in events],
                [json.dumps(list(e.features)) for e in events],
                ["\x1f".join(e.interleaving_arms) for e in events],
                # repr() keeps every digit of a float; PostgreSQL reads it back exactly into real.
                ["\x1f".join(repr(p) for p in e.propensities) for e in events],
                [json.dumps([list(entry) for entry in e.exploration_pool]) for e in events],
            )
        return len(rows)

    async def _store_interactions(self, connection: asyncpg.Connection, events: Sequence[Interaction]) -> int:
        if self._write_method == "copy":
            await connection.execute(_STAGE_INTERACTIONS)
            await connection.copy_records_to_table(
                "interactions_in",
                columns=("ordinal", *_INTERACTION_COLUMNS),
                records=[
                    (
                        ordinal, e.event_id, e.type, e.request_id, e.product_id, e.position, e.occurred_at,
                        self._pseudonym(e.user_id), e.session_id, e.quantity, e.value,
                    )
                    for ordinal, e in enumerate(events)
                ],
            )
            rows = await connection.fetch(_INSERT_INTERACTIONS["copy"])
        else:
            rows = await connection.fetch(
                _INSERT_INTERACTIONS["unnest"],
                [e.event_id for e in events],
                [e.type for e in events],
                [e.request_id for e in events],
                [e.product_id for e in events],
                [e.position for e in events],
                [e.occurred_at for e in events],
                [self._pseudonym(e.user_id) for e in events],
                [e.session_id for e in events],
                [e.quantity for e in events],
                [e.value for e in events],
            )
        return len(rows)

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


async def pseudonymise_stored_user_ids(pool: asyncpg.Pool, pseudonyms: UserIdPseudonyms) -> int:
    """Replaces user ids stored in clear with their pseudonyms; returns how many distinct ids.

    The first run covers every row; later ones the rows since the previous run minus
    PSEUDONYMISE_OVERLAP (a partition-pruned scan of recent months). One transaction, under an
    advisory lock so that replicas starting together do the work once."""
    async with pool.acquire() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('shelfwise_pseudonymise_user_ids'))")
        previous = await connection.fetchval("SELECT done_at FROM event_maintenance WHERE task = $1", PSEUDONYMISE_TASK)
        since = previous - PSEUDONYMISE_OVERLAP if previous else datetime(1, 1, 1, tzinfo=timezone.utc)
        hashed = 0
        for table in ("impressions", "interactions"):
            clear = [row["user_id"] for row in await connection.fetch(_CLEAR_USER_IDS[table], since)]
            if not clear:
                continue
            await connection.execute(_STAGE_PSEUDONYMS)
            await connection.copy_records_to_table(
                "user_pseudonyms_in", columns=("raw", "pseudonym"), records=[(raw, pseudonyms(raw)) for raw in clear]
            )
            await connection.execute(_PSEUDONYMISE[table], since)
            await connection.execute("DROP TABLE user_pseudonyms_in")
            hashed += len(clear)
        await connection.execute(
            "INSERT INTO event_maintenance (task, done_at) VALUES ($1, now())"
            " ON CONFLICT (task) DO UPDATE SET done_at = excluded.done_at",
            PSEUDONYMISE_TASK,
        )
    if hashed:
        log.info("pseudonymised %d user id(s) stored in clear", hashed)
    return hashed

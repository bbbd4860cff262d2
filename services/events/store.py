"""Event writes to PostgreSQL: idempotent bulk writes (COPY through a staging table), retried
across lost connections, with attribution checks. Reads are in queries.py.

User ids never reach the tables in clear: the store writes a keyed hash of each
(`services.events.pseudonyms.UserIdPseudonyms`, HMAC-SHA256 with SHELFWISE_USER_ID_KEY)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
from typing import Sequence

import asyncpg

from services.common.errors import InvalidArgument, NotFound, ShelfwiseError, Unavailable
from services.events.metrics import EventsMetrics
from services.events.model import Impression, Interaction
from services.events.pseudonyms import UserIdPseudonyms

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

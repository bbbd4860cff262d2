"""Pseudonymous user ids: the keyed hash (HMAC-SHA256 with SHELFWISE_USER_ID_KEY) that stands
for a user id in every events table, so a shopper's events still group together while the
analytics tables hold no id that leads back to the shop's customer records without the key;
and the pass that hashes in place rows stored before pseudonyms existed (migration 0007
explains why not in SQL)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from datetime import datetime, timedelta, timezone

import asyncpg

log = logging.getLogger(__name__)

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

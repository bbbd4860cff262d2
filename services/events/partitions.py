"""Monthly partitions of the event tables, created ahead of time.

`impressions` and `interactions` are partitioned by month of occurred_at (migration 0006) with
a DEFAULT partition that takes any event whose month has no partition, so a missing partition
never rejects an event; it only makes that month's rows slower to query and to drop. The
events service therefore creates the current month's partition and the next few at start-up
and then periodically. The SQL function `shelfwise_event_partition` does the work (one place,
shared with the migration): it moves that month's rows out of DEFAULT, then attaches.

The same periodic round is the event tables' maintenance (`ensure_partitions`):

- Retention (SHELFWISE_EVENTS_RETENTION_MONTHS = N > 0): the current month and the N before it
  are kept; older monthly partitions are dropped whole (cheap, no row-by-row delete or bloat),
  DEFAULT rows older than that are deleted, and so are the idempotency keys of those events.
  An event that arrives later for a dropped month would land in DEFAULT and go at the next
  round.
- Pseudonyms: user ids still stored in clear (rows older than pseudonymisation, or written by
  pods of the previous version during a rolling update) are hashed in place
  (`services.events.pseudonyms.pseudonymise_stored_user_ids`).
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, timezone

import asyncpg

from services.events.pseudonyms import UserIdPseudonyms, pseudonymise_stored_user_ids

log = logging.getLogger(__name__)

PARENTS = ("impressions", "interactions")
KEY_TABLES = {"impressions": "impression_keys", "interactions": "interaction_keys"}
_PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = $1::regclass ORDER BY c.relname
"""
# Per parent, from fixed tables (never from input): expired DEFAULT rows and idempotency keys.
_DELETE_EXPIRED_DEFAULT = {parent: f"DELETE FROM {parent}_default WHERE occurred_at < $1" for parent in PARENTS}
_DELETE_EXPIRED_KEYS = {parent: f"DELETE FROM {KEY_TABLES[parent]} WHERE occurred_at < $1" for parent in PARENTS}
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def months_from(today: date, months_ahead: int) -> list[date]:
    """The first day of `today`'s month and of the `months_ahead` months after it."""
    months = []
    year, month = today.year, today.month
    for _ in range(months_ahead + 1):
        months.append(date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return months


def partition_name(parent: str, month: date) -> str:
    return f"{parent}_{month:%Y_%m}"


def month_of_partition(parent: str, name: str) -> date | None:
    """date(2024, 3, 1) for 'impressions_2024_03'; None for DEFAULT or anything else."""
    match = re.fullmatch(re.escape(parent) + r"_(\d{4})_(\d{2})", name)
    return date(int(match[1]), int(match[2]), 1) if match else None


def retention_cutoff(today: date, retention_months: int) -> date:
    """The first day of the oldest month kept: `today`'s month minus `retention_months`."""
    months = today.year * 12 + (today.month - 1) - retention_months
    return date(months // 12, months % 12 + 1, 1)


def quote_identifier(name: str) -> str:
    """A table name for DDL, which cannot take it as a query parameter. The one place SQL text
    is built from a name (tests/contract/test_sql_parameterised.py allows only this): the
    name must be a plain lower-case identifier, and is double-quoted on top."""
    if not _IDENTIFIER.match(name):
        raise ValueError(f"{name!r} is not a plain table name")
    return '"' + name + '"'


def drop_table_sql(name: str) -> str:
    return "DROP TABLE " + quote_identifier(name)


async def drop_expired(pool: asyncpg.Pool, retention_months: int, today: date | None = None) -> list[str]:
    """Drops the monthly partitions older than the retention period and deletes expired DEFAULT
    rows and idempotency keys; returns the partitions dropped."""
    today = today or datetime.now(timezone.utc).date()
    cutoff = retention_cutoff(today, retention_months)
    cutoff_time = datetime(cutoff.year, cutoff.month, cutoff.day, tzinfo=timezone.utc)
    dropped = []
    async with pool.acquire() as connection:
        for parent in PARENTS:
            async with connection.transaction():
                # The lock shelfwise_event_partition takes: replicas never race on the same table.
                await connection.execute("SELECT pg_advisory_xact_lock(hashtext('shelfwise_event_partition'))")
                # Dropping a partition locks its parent: give up rather than stall writers.
                await connection.execute("SET LOCAL lock_timeout = '5s'")
                for row in await connection.fetch(_PARTITIONS, parent):
                    month = month_of_partition(parent, row["relname"])
                    if month is not None and month < cutoff:
                        await connection.execute(drop_table_sql(row["relname"]))
                        dropped.append(row["relname"])
                await connection.execute(_DELETE_EXPIRED_DEFAULT[parent], cutoff_time)
                await connection.execute(_DELETE_EXPIRED_KEYS[parent], cutoff_time)
    if dropped:
        log.info("dropped event partitions older than %s (retention %d months): %s", cutoff, retention_months, ", ".join(dropped))
    return dropped


async def ensure_partitions(
    pool: asyncpg.Pool,
    months_ahead: int,
    today: date | None = None,
    retention_months: int | None = None,
    pseudonyms: UserIdPseudonyms | None = None,
) -> list[str]:
    """The maintenance round: creates the missing partitions from this month (UTC) to
    `months_ahead` months ahead (returns the names created now; one transaction per partition
    keeps each lock short), then applies retention and pseudonymises ids stored in clear.

    `retention_months` and `pseudonyms` default to the environment's settings
    (services.events.config)."""
    from services.events.config import retention_months as configured_retention, user_id_key

    today = today or datetime.now(timezone.utc).date()
    retention_months = configured_retention() if retention_months is None else retention_months
    pseudonyms = UserIdPseudonyms(user_id_key()) if pseudonyms is None else pseudonyms
    created = []
    async with pool.acquire() as connection:
        for parent in PARENTS:
            for month in months_from(today, months_ahead):
                async with connection.transaction():
                    if await connection.fetchval("SELECT shelfwise_event_partition($1, $2)", parent, month):
                        created.append(partition_name(parent, month))
    if retention_months > 0:
        await drop_expired(pool, retention_months, today)
    await pseudonymise_stored_user_ids(pool, pseudonyms)
    return created

"""Monthly partitions of the event tables, created ahead of time.

`impressions` and `interactions` are partitioned by month of occurred_at (migration 0006) with
a DEFAULT partition that takes any event whose month has no partition, so a missing partition
never rejects an event; it only makes that month's rows slower to query and to drop. The
events service therefore creates the current month's partition and the next few at start-up
and then periodically. The SQL function `shelfwise_event_partition` does the work (one place,
shared with the migration): it moves that month's rows out of DEFAULT, then attaches.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

import asyncpg

PARENTS = ("impressions", "interactions")


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


async def ensure_partitions(pool: asyncpg.Pool, months_ahead: int, today: date | None = None) -> list[str]:
    """Creates the missing partitions from this month (UTC) to `months_ahead` months ahead;
    returns the names created now. One transaction per partition keeps each lock short."""
    today = today or datetime.now(timezone.utc).date()
    created = []
    async with pool.acquire() as connection:
        for parent in PARENTS:
            for month in months_from(today, months_ahead):
                async with connection.transaction():
                    if await connection.fetchval("SELECT shelfwise_event_partition($1, $2)", parent, month):
                        created.append(partition_name(parent, month))
    return created

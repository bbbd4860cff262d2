"""PostgreSQL access shared by the services: asyncpg pools and versioned migrations.

Migrations are the numbered `migrations/NNNN_name.sql` files beside this module, applied in
order at start-up inside one transaction each, under an advisory lock so that services starting
together never race. Applied versions are recorded in `schema_migrations`.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

import asyncpg

from services.common.errors import Unavailable

log = logging.getLogger(__name__)

# Any constant works; it only has to be the same in every service.
_MIGRATION_LOCK_ID = 7_312_202_611


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) for every migration file, in order."""
    found = []
    for entry in resources.files("services.common.migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            found.append((version, entry.name, entry.read_text(encoding="utf-8")))
    return sorted(found)


async def apply_migrations(pool: asyncpg.Pool) -> list[str]:
    """Applies pending migrations; returns the names applied now."""
    applied_now = []
    async with pool.acquire() as connection:
        await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_ID)
        try:
            await connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row["version"] for row in await connection.fetch("SELECT version FROM schema_migrations")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                async with connection.transaction():
                    await connection.execute(sql)
                    await connection.execute(
                        "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                    )
                applied_now.append(name)
                log.info("applied migration %s", name)
        finally:
            await connection.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_ID)
    return applied_now


async def create_pool(url: str, min_size: int = 1, max_size: int = 10, migrate: bool = True) -> asyncpg.Pool:
    """Connects (failing with Unavailable and the reason) and applies migrations."""
    try:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size, command_timeout=30)
    except (OSError, asyncpg.PostgresError) as error:
        raise Unavailable(f"PostgreSQL at {redact(url)} is unreachable: {error}") from error
    if migrate:
        await apply_migrations(pool)
    return pool


def redact(url: str) -> str:
    """The URL without its password (in the authority or as a query parameter), for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        credentials, host = netloc.rsplit("@", 1)
        netloc = f"{credentials.split(':', 1)[0]}:***@{host}"
    query = re.sub(r"(?i)(^|&)(password)=[^&]*", r"\1\2=***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))

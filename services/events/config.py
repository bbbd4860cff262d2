"""Events service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from services.common.config import ServerSettings, database_url, env_float, env_int, env_str

WRITE_METHODS = ("copy", "unnest")


@dataclass(frozen=True)
class EventsSettings:
    server: ServerSettings
    database_url: str
    pool_size: int
    # "copy" (COPY into a staging table) or "unnest" (one INSERT of arrays; the path before
    # COPY, kept so `shelfwise bench events` can compare the two).
    write_method: str = "copy"
    # A write that lost its database connection is retried for at most this long (and never
    # past the caller's deadline) before the caller gets UNAVAILABLE.
    write_retry_seconds: float = 30.0
    # Monthly partitions are kept this many months ahead of the current one.
    partition_months_ahead: int = 2
    partition_check_seconds: float = 3600.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "EventsSettings":
        write_method = env_str("SHELFWISE_EVENTS_WRITE_METHOD", "copy", environ)
        if write_method not in WRITE_METHODS:
            raise ValueError(f"SHELFWISE_EVENTS_WRITE_METHOD must be one of {', '.join(WRITE_METHODS)}, got {write_method!r}")
        return cls(
            server=ServerSettings.from_env("events", environ),
            database_url=database_url(environ),
            pool_size=env_int("SHELFWISE_EVENTS_POOL_SIZE", 10, environ, minimum=1),
            write_method=write_method,
            write_retry_seconds=env_float("SHELFWISE_EVENTS_WRITE_RETRY_SECONDS", 30.0, environ, minimum=0.0),
            partition_months_ahead=env_int("SHELFWISE_EVENTS_PARTITION_MONTHS_AHEAD", 2, environ, minimum=0),
            partition_check_seconds=env_float("SHELFWISE_EVENTS_PARTITION_CHECK_SECONDS", 3600.0, environ, minimum=1.0),
        )

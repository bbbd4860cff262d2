"""Events service settings, from the environment.

Privacy settings (see deploy/README.md, "Privacy and retention"):
  SHELFWISE_USER_ID_KEY[_FILE]       key of the user id pseudonyms (HMAC-SHA256). Unset, a fixed
                                     development key is used: fine for `shelfwise up` and
                                     tests, NOT for production (anyone can recompute it). The
                                     Kubernetes overlays mount it from the Secret.
  SHELFWISE_EVENTS_RETENTION_MONTHS  raw events are kept for the current month and this many
                                     before it; older monthly partitions are dropped. 0 (the
                                     local default) keeps everything; the overlays set 13.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Mapping

from services.common.config import ServerSettings, database_url, env_float, env_int, env_str, read_secret

log = logging.getLogger(__name__)

WRITE_METHODS = ("copy", "unnest")
# Public on purpose: it only keeps local development and tests working without a Secret.
DEVELOPMENT_USER_ID_KEY = b"shelfwise-development-user-id-key-not-for-production"
_warned_about_development_key = threading.Event()


def user_id_key(environ: Mapping[str, str] | None = None) -> bytes:
    """The pseudonym key: SHELFWISE_USER_ID_KEY_FILE or SHELFWISE_USER_ID_KEY, else the
    development key (with a warning)."""
    key = read_secret("SHELFWISE_USER_ID_KEY", environ)
    if not key:
        if not _warned_about_development_key.is_set():  # once per process, not every maintenance round
            _warned_about_development_key.set()
            log.warning("SHELFWISE_USER_ID_KEY is not set: user ids are pseudonymised with the public development key")
        return DEVELOPMENT_USER_ID_KEY
    if len(key) < 16:
        raise ValueError("SHELFWISE_USER_ID_KEY must be at least 16 characters (e.g. `openssl rand -hex 32`)")
    return key.encode("utf-8")


def retention_months(environ: Mapping[str, str] | None = None) -> int:
    return env_int("SHELFWISE_EVENTS_RETENTION_MONTHS", 0, environ, minimum=0)


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
    # 0 keeps every month; N keeps this month and the N before it (see the module docstring).
    retention_months: int = 0
    user_id_key: bytes = field(default=DEVELOPMENT_USER_ID_KEY, repr=False)

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
            retention_months=retention_months(environ),
            user_id_key=user_id_key(environ),
        )

"""Events service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from services.common.config import ServerSettings, database_url, env_int


@dataclass(frozen=True)
class EventsSettings:
    server: ServerSettings
    database_url: str
    pool_size: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "EventsSettings":
        return cls(
            server=ServerSettings.from_env("events", environ),
            database_url=database_url(environ),
            pool_size=env_int("SHELFWISE_EVENTS_POOL_SIZE", 10, environ, minimum=1),
        )

"""Retrieval service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from services.common.config import ServerSettings, database_url, env_int, env_str, model_repository


@dataclass(frozen=True)
class RetrievalSettings:
    server: ServerSettings
    database_url: str
    model_repository: Path
    inference: str
    default_limit: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RetrievalSettings":
        return cls(
            server=ServerSettings.from_env("retrieval", environ),
            database_url=database_url(environ),
            model_repository=model_repository(environ),
            inference=env_str("SHELFWISE_INFERENCE", "embedded", environ),
            default_limit=env_int("SHELFWISE_RETRIEVAL_DEFAULT_LIMIT", 200, environ, minimum=1),
        )

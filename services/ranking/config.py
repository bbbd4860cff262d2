"""Ranking service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from services.common.config import ServerSettings, env_float, env_str, model_repository, service_address


@dataclass(frozen=True)
class RankingSettings:
    server: ServerSettings
    model_repository: Path
    inference: str
    events_address: str
    popularity_refresh_seconds: float
    popularity_window_days: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RankingSettings":
        return cls(
            server=ServerSettings.from_env("ranking", environ),
            model_repository=model_repository(environ),
            inference=env_str("SHELFWISE_INFERENCE", "embedded", environ),
            events_address=service_address("events", environ),
            popularity_refresh_seconds=env_float("SHELFWISE_POPULARITY_REFRESH_SECONDS", 30.0, environ, minimum=0.1),
        )

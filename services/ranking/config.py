"""Ranking service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from services.common.config import InferenceSettings, ServerSettings, env_float, service_address
from services.ranking.ranker import AdjustmentWeights


@dataclass(frozen=True)
class RankingSettings:
    server: ServerSettings
    inference: InferenceSettings
    events_address: str
    popularity_refresh_seconds: float
    popularity_window_days: int = 30
    # How named preferences and engagement adjust relevance-ranked results (services/ranking/ranker.py).
    adjustments: AdjustmentWeights = AdjustmentWeights()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RankingSettings":
        return cls(
            server=ServerSettings.from_env("ranking", environ),
            inference=InferenceSettings.from_env(environ),
            events_address=service_address("events", environ),
            popularity_refresh_seconds=env_float("SHELFWISE_POPULARITY_REFRESH_SECONDS", 30.0, environ, minimum=0.1),
            adjustments=AdjustmentWeights(**{
                name: env_float(f"SHELFWISE_RANKING_{name.upper()}_WEIGHT", default, environ, minimum=0.0)
                for name, default in vars(AdjustmentWeights()).items()
            }),
        )

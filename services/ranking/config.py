"""Ranking service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from services.common.config import InferenceSettings, ServerSettings, env_float, service_address
from services.ranking.ranker import EngagementWeights


@dataclass(frozen=True)
class RankingSettings:
    server: ServerSettings
    inference: InferenceSettings
    events_address: str
    popularity_refresh_seconds: float
    popularity_window_days: int = 30
    # How engagement adjusts relevance-ranked results (services/ranking/ranker.py).
    engagement: EngagementWeights = EngagementWeights()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RankingSettings":
        return cls(
            server=ServerSettings.from_env("ranking", environ),
            inference=InferenceSettings.from_env(environ),
            events_address=service_address("events", environ),
            popularity_refresh_seconds=env_float("SHELFWISE_POPULARITY_REFRESH_SECONDS", 30.0, environ, minimum=0.1),
            engagement=EngagementWeights(
                popularity=env_float("SHELFWISE_RANKING_POPULARITY_WEIGHT", EngagementWeights.popularity, environ, minimum=0.0),
                personal=env_float("SHELFWISE_RANKING_PERSONAL_WEIGHT", EngagementWeights.personal, environ, minimum=0.0),
                ctr=env_float("SHELFWISE_RANKING_CTR_WEIGHT", EngagementWeights.ctr, environ, minimum=0.0),
            ),
        )

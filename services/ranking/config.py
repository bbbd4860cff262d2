"""Ranking service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from services.common.config import InferenceSettings, ServerSettings, env_float, service_address
from services.common.popularity import PopularitySettings
from services.ranking.ranker import AdjustmentWeights


@dataclass(frozen=True)
class RankingSettings:
    server: ServerSettings
    inference: InferenceSettings
    events_address: str
    # How often popularity is read from events, over which window (services/common/popularity.py).
    popularity: PopularitySettings = PopularitySettings()
    # How named preferences and engagement adjust relevance-ranked results (services/ranking/ranker.py).
    adjustments: AdjustmentWeights = AdjustmentWeights()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RankingSettings":
        return cls(
            server=ServerSettings.from_env("ranking", environ),
            inference=InferenceSettings.from_env(environ),
            events_address=service_address("events", environ),
            popularity=PopularitySettings.from_env(environ),
            adjustments=AdjustmentWeights(**{
                name: env_float(f"SHELFWISE_RANKING_{name.upper()}_WEIGHT", default, environ, minimum=0.0)
                for name, default in vars(AdjustmentWeights()).items()
            }),
        )

"""Ranking service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Mapping

from services.common.config import InferenceSettings, ServerSettings, env_float, env_str, service_address
from services.ranking.ranker import AdjustmentWeights


@dataclass(frozen=True)
class RankingSettings:
    server: ServerSettings
    inference: InferenceSettings
    events_address: str
    popularity_refresh_seconds: float
    popularity_window_days: int = 30
    # A fixed window [since, until) instead of the last window_days: popularity frozen at a point
    # in time (SHELFWISE_POPULARITY_SINCE / _UNTIL, ISO 8601, both or neither), so that the arms
    # of an experiment do not learn from each other's clicks while it runs.
    popularity_frozen: tuple[datetime, datetime] | None = None
    # How named preferences and engagement adjust relevance-ranked results (services/ranking/ranker.py).
    adjustments: AdjustmentWeights = AdjustmentWeights()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RankingSettings":
        return cls(
            server=ServerSettings.from_env("ranking", environ),
            inference=InferenceSettings.from_env(environ),
            events_address=service_address("events", environ),
            popularity_refresh_seconds=env_float("SHELFWISE_POPULARITY_REFRESH_SECONDS", 30.0, environ, minimum=0.1),
            popularity_frozen=_frozen_window(environ),
            adjustments=AdjustmentWeights(**{
                name: env_float(f"SHELFWISE_RANKING_{name.upper()}_WEIGHT", default, environ, minimum=0.0)
                for name, default in vars(AdjustmentWeights()).items()
            }),
        )


def _frozen_window(environ: Mapping[str, str] | None) -> tuple[datetime, datetime] | None:
    since = env_str("SHELFWISE_POPULARITY_SINCE", "", environ).strip()
    until = env_str("SHELFWISE_POPULARITY_UNTIL", "", environ).strip()
    if not since and not until:
        return None
    if not since or not until:
        raise ValueError("SHELFWISE_POPULARITY_SINCE and SHELFWISE_POPULARITY_UNTIL: set both (a frozen window) or neither")
    window = []
    for name, text in (("SHELFWISE_POPULARITY_SINCE", since), ("SHELFWISE_POPULARITY_UNTIL", until)):
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{name}: must be an ISO 8601 time such as 2026-12-01T10:00:00+00:00, got {text!r}") from None
        window.append(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc))
    if window[0] >= window[1]:
        raise ValueError(f"SHELFWISE_POPULARITY_UNTIL ({until}) must be after SHELFWISE_POPULARITY_SINCE ({since})")
    return window[0], window[1]

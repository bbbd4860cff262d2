"""Gateway settings, from the environment: where the other services are and how long each
stage may take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from services.common.config import ServerSettings, env_float, env_int, service_address


@dataclass(frozen=True)
class StageDeadlines:
    """Seconds each stage may take; each is also capped by the caller's own deadline."""

    query_understanding: float
    retrieval: float
    ranking: float
    events: float


@dataclass(frozen=True)
class GatewaySettings:
    server: ServerSettings
    query_understanding_address: str
    retrieval_address: str
    ranking_address: str
    events_address: str
    deadlines: StageDeadlines
    candidates: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "GatewaySettings":
        return cls(
            server=ServerSettings.from_env("gateway", environ),
            query_understanding_address=service_address("query_understanding", environ),
            retrieval_address=service_address("retrieval", environ),
            ranking_address=service_address("ranking", environ),
            events_address=service_address("events", environ),
            deadlines=StageDeadlines(
                query_understanding=env_float("SHELFWISE_DEADLINE_QUERY_UNDERSTANDING_SECONDS", 0.5, environ, 0.001),
                retrieval=env_float("SHELFWISE_DEADLINE_RETRIEVAL_SECONDS", 2.0, environ, 0.001),
                ranking=env_float("SHELFWISE_DEADLINE_RANKING_SECONDS", 1.0, environ, 0.001),
                events=env_float("SHELFWISE_DEADLINE_EVENTS_SECONDS", 2.0, environ, 0.001),
            ),
            candidates=env_int("SHELFWISE_GATEWAY_CANDIDATES", 200, environ, minimum=1),
        )

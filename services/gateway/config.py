"""Gateway settings, from the environment: where the other services are, how long each
stage may take, when to stop calling a failing one (``SHELFWISE_CIRCUIT_FAILURES``,
``SHELFWISE_CIRCUIT_OPEN_SECONDS``, see ``services.common.circuit``), and the experiments to
run (``SHELFWISE_EXPERIMENTS``: a JSON or TOML file, see ``services.gateway.experiments``;
unset = none). The experiments file is read and checked
here, at start-up, so a bad file stops the gateway instead of failing requests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from services.common.circuit import CircuitSettings
from services.common.popularity import PopularitySettings
from services.common.config import ServerSettings, env_float, env_int, env_str, model_repository, service_address
from services.common.env import env_bool
from services.common.text import facet_form
from services.gateway.experiments import Experiments, check_pinned_models, load_experiments
from services.gateway.exploration import ExplorationSettings


@dataclass(frozen=True)
class StageDeadlines:
    """Seconds each stage may take; each is also capped by the caller's own deadline."""

    query_understanding: float
    retrieval: float
    ranking: float
    events: float
    # Suggest's one call (query understanding's index look-up): a search box asks on every
    # keystroke, and a late completion is worth nothing, so it is short.
    suggest: float = 0.1


@dataclass(frozen=True)
class RecommendRules:
    """Business rules every Recommend obeys. `in_stock_only`: out-of-stock products are never
    recommended. `exclude_purchased`: products the shopper (user_id, else session_id) bought are
    never recommended, except in `repurchasable_categories` (facet forms: consumables bought
    again, e.g. "coffee"); the purchases are read from events with the shopper's history."""

    in_stock_only: bool = True
    exclude_purchased: bool = True
    repurchasable_categories: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RecommendRules":
        categories = env_str("SHELFWISE_RECOMMEND_REPURCHASABLE_CATEGORIES", "", environ)
        return cls(
            in_stock_only=env_bool("SHELFWISE_RECOMMEND_IN_STOCK_ONLY", True, environ),
            exclude_purchased=env_bool("SHELFWISE_RECOMMEND_EXCLUDE_PURCHASED", True, environ),
            repurchasable_categories=tuple(facet_form(c) for c in categories.split(",") if c.strip()),
        )


@dataclass(frozen=True)
class GatewaySettings:
    server: ServerSettings
    query_understanding_address: str
    retrieval_address: str
    ranking_address: str
    events_address: str
    deadlines: StageDeadlines
    candidates: int
    experiments: Experiments = field(default_factory=Experiments)
    # Per downstream service: when to stop calling it and fail the stage fast (circuit.py).
    circuit: CircuitSettings = field(default_factory=CircuitSettings)
    # A share of first pages shown in a sampled order, for off-policy evaluation (exploration.py).
    exploration: ExplorationSettings = field(default_factory=ExplorationSettings)
    # The engagement that orders popular and cold-start pages, read from events in the
    # background (services/common/popularity.py), as ranking reads it.
    popularity: PopularitySettings = PopularitySettings()
    recommend_rules: RecommendRules = RecommendRules()

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
                suggest=env_float("SHELFWISE_DEADLINE_SUGGEST_SECONDS", 0.1, environ, 0.001),
            ),
            candidates=env_int("SHELFWISE_GATEWAY_CANDIDATES", 200, environ, minimum=1),
            experiments=experiments_from_env(environ),
            circuit=CircuitSettings.from_env(environ),
            exploration=ExplorationSettings(
                share=env_float("SHELFWISE_EXPLORATION_SHARE", 0.0, environ, minimum=0.0),
                temperature=env_float("SHELFWISE_EXPLORATION_TEMPERATURE", 3.0, environ, minimum=0.01),
                depth=env_int("SHELFWISE_EXPLORATION_DEPTH", 20, environ, minimum=1),
            ),
            popularity=PopularitySettings.from_env(environ),
            recommend_rules=RecommendRules.from_env(environ),
        )


def experiments_from_env(environ: Mapping[str, str] | None = None) -> Experiments:
    experiments = load_experiments(env_str("SHELFWISE_EXPERIMENTS", "", environ))
    # The gateway runs no model, but where it sees the model repository (one machine, or a
    # shared volume) a pinned CTR head that is not there is caught now rather than per request.
    repository = model_repository(environ)
    if experiments.pinned_ctr_head_versions() and repository.is_dir():
        check_pinned_models(experiments, repository)
    return experiments

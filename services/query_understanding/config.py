"""Query understanding service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from services.common.config import ServerSettings, database_url, env_bool, env_float, env_int, env_str
from services.query_understanding.prices import CurrencyRates
from services.query_understanding.suggestion_source import SuggestSettings


@dataclass(frozen=True)
class QueryUnderstandingSettings:
    server: ServerSettings
    database_url: str
    vocabulary_refresh_seconds: float
    # Chinese queries get an English rendering that retrieval encodes next to them; off for a
    # catalogue that is not in English.
    translate_queries: bool = True
    # Exchange rates for price bounds written in another currency than the catalogue's.
    currency_rates: CurrencyRates = CurrencyRates({})
    # Autocomplete (Suggest): who must have searched a logged query before it is suggested,
    # how often and how far back the query log is read.
    suggest: SuggestSettings = SuggestSettings()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "QueryUnderstandingSettings":
        return cls(
            server=ServerSettings.from_env("query_understanding", environ),
            database_url=database_url(environ),
            vocabulary_refresh_seconds=env_float("SHELFWISE_VOCABULARY_REFRESH_SECONDS", 2.0, environ, minimum=0.1),
            translate_queries=env_bool("SHELFWISE_QUERY_TRANSLATION", True, environ),
            currency_rates=CurrencyRates.parse(env_str("SHELFWISE_CURRENCY_RATES", "", environ)),
            suggest=SuggestSettings(
                min_users=env_int("SHELFWISE_SUGGEST_MIN_USERS", 5, environ, minimum=1),
                query_log_seconds=env_float("SHELFWISE_SUGGEST_QUERY_LOG_SECONDS", 300.0, environ, minimum=0.1),
                query_days=env_int("SHELFWISE_SUGGEST_QUERY_DAYS", 90, environ, minimum=1),
                max_queries=env_int("SHELFWISE_SUGGEST_MAX_QUERIES", 50_000, environ, minimum=0),
            ),
        )

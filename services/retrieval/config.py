"""Retrieval service settings, from the environment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from services.common.config import (
    InferenceSettings,
    ServerSettings,
    database_url,
    env_float,
    env_int,
    multilingual_encoder_model,
    text_encoder_model,
)
from services.retrieval.fusion import Fusion

# Longest a search waits for its query vector before answering from BM25 alone (degraded
# "dense"): under overload the encoder's queue grows, and a lexical answer in time beats a
# full one after the caller's deadline. Also capped at a third of the caller's time left.
DEFAULT_DENSE_WAIT_SECONDS = 0.5


@dataclass(frozen=True)
class RetrievalSettings:
    server: ServerSettings
    database_url: str
    inference: InferenceSettings
    # The repository models of the English (primary) and multilingual spaces (None: no
    # multilingual space); each embeds products as passages and search text as queries.
    text_encoder: str
    multilingual_encoder: str | None
    default_limit: int
    catalog_sync_seconds: float
    fusion: Fusion
    dense_wait_seconds: float = DEFAULT_DENSE_WAIT_SECONDS
    # How often each replica checks the merchandising rules store for a change.
    rules_refresh_seconds: float = 1.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "RetrievalSettings":
        return cls(
            server=ServerSettings.from_env("retrieval", environ),
            database_url=database_url(environ),
            inference=InferenceSettings.from_env(environ),
            text_encoder=text_encoder_model(environ),
            multilingual_encoder=multilingual_encoder_model(environ),
            default_limit=env_int("SHELFWISE_RETRIEVAL_DEFAULT_LIMIT", 200, environ, minimum=1),
            catalog_sync_seconds=env_float("SHELFWISE_CATALOG_SYNC_SECONDS", 2.0, environ, minimum=0.05),
            fusion=Fusion.from_env(environ),
            dense_wait_seconds=env_float("SHELFWISE_RETRIEVAL_DENSE_WAIT_SECONDS", DEFAULT_DENSE_WAIT_SECONDS, environ, minimum=0.001),
            rules_refresh_seconds=env_float("SHELFWISE_RULES_REFRESH_SECONDS", 1.0, environ, minimum=0.05),
        )

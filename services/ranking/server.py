"""Builds and runs the ranking server: scorer from the model repository, popularity from events."""

from __future__ import annotations

import logging
from dataclasses import replace

from shelfwise.events.v1 import events_pb2_grpc
from shelfwise.ranking.v1 import ranking_pb2, ranking_pb2_grpc

from services.common.channels import create_channel
from services.common.config import InferenceSettings
from services.common.errors import NotFound
from services.common.backends import create_backend, wait_for_models
from services.common.popularity import events_popularity
from services.common.server import Listening, RunningServer, start_server
from services.ranking.config import RankingSettings
from services.ranking.ranker import Ranker
from services.ranking.scorers import (
    CTR_HEAD_MODEL,
    RELEVANCE_RANKER_MODEL,
    FeatureScorer,
    OnnxCtrHead,
    create_relevance_ranker,
    create_scorer,
)
from services.ranking.servicer import RankingServicer

log = logging.getLogger(__name__)

SERVICE_NAME = ranking_pb2.DESCRIPTOR.services_by_name["RankingService"].full_name


class PinnedCtrHeads:
    """CTR heads of pinned versions (experiment arms ask for them by number): one backend per
    version, made on first use and kept, since an experiment's arms ask for the same few."""

    def __init__(self, inference: InferenceSettings):
        self._inference = inference
        self._scorers: dict[int, OnnxCtrHead] = {}
        self._backends = []

    def scorer(self, version: int) -> OnnxCtrHead:
        if version not in self._scorers:
            pinned = {**self._inference.pinned_versions, CTR_HEAD_MODEL: version}
            backend = create_backend(replace(self._inference, pinned_versions=pinned))
            if not backend.has_model(CTR_HEAD_MODEL):
                raise NotFound(f"ctr_head_version: {CTR_HEAD_MODEL} version {version} is not in the model repository")
            self._backends.append(backend)
            self._scorers[version] = OnnxCtrHead(backend)
        return self._scorers[version]

    async def close(self) -> None:
        for backend in self._backends:
            await backend.close()


async def create_server(settings: RankingSettings, port: int | None = None) -> RunningServer:
    backend = create_backend(settings.inference)
    scorer = create_scorer(backend)
    relevance = create_relevance_ranker(backend)
    models = [CTR_HEAD_MODEL] if scorer.version != FeatureScorer.version else []
    models += [RELEVANCE_RANKER_MODEL] if relevance is not None else []
    if models and not await wait_for_models(backend, models, settings.inference.triton_startup_seconds):
        # Not fatal: each request falls back to the documented formula and says so.
        log.warning("%s not served yet; ranking without them until they are", ", ".join(models))
    channel = create_channel(settings.events_address, settings.server.max_message_bytes)
    popularity = events_popularity(events_pb2_grpc.EventsServiceStub(channel), settings.popularity)
    popularity.start()
    versions = PinnedCtrHeads(settings.inference)
    servicer = RankingServicer(
        Ranker(scorer, popularity, versions=versions.scorer, relevance=relevance, adjustments=settings.adjustments)
    )
    running = await start_server(
        register=lambda server: ranking_pb2_grpc.add_RankingServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        listening=Listening.of(settings.server, port),
    )
    running.on_stop += [channel.close, popularity.stop, backend.close, versions.close]
    # Ranking needs no dependency to answer (popularity is optional), so it serves at once.
    await running.set_serving(True)
    return running

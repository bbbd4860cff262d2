"""Builds and runs the retrieval server: PostgreSQL pool, text encoders, catalogue indexes."""

from __future__ import annotations

from shelfwise.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.common.background import Periodic
from services.common.database import create_pool
from services.common.errors import Unavailable
from services.common.heap import HeapFreezer
from services.common.backends import create_backend, wait_for_models
from services.common.server import Listening, RunningServer, start_server
from services.common.text_encoder import TextEncoder
from services.retrieval.config import RetrievalSettings
from services.retrieval.personal import USER_SEQUENCE_ENCODER, SequenceModel
from services.retrieval.retriever import CatalogIndex
from services.retrieval.rule_store import RuleStore, RulesKeeper
from services.retrieval.servicer import RetrievalServicer
from services.retrieval.store import ProductStore

SERVICE_NAME = retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name
# How often to check whether the catalogue has grown enough to freeze the heap again.
HEAP_CHECK_SECONDS = 10.0


async def create_server(settings: RetrievalSettings, port: int | None = None, freeze_heap: bool = False) -> RunningServer:
    """Starts the server (port 0 = any free port; see `.port`); SERVING once indexes are built.
    `freeze_heap`: keep the catalogue index out of full garbage collections (`HeapFreezer`), a
    decision for the process (`python -m services.retrieval` makes it), not for a test that
    starts the server among others."""
    pool = await create_pool(settings.database_url)
    backend = create_backend(settings.inference)
    try:
        # The catalogue is encoded at start-up, so the encoders must be reachable now.
        encoder_names = [name for name in (settings.text_encoder, settings.multilingual_encoder) if name]
        models = list(encoder_names)
        # Personal retrieval uses the sequence model when one has been trained and exported;
        # without it, "for this user" works from the history's text embeddings.
        if backend.has_model(USER_SEQUENCE_ENCODER):
            models.append(USER_SEQUENCE_ENCODER)
        if not await wait_for_models(backend, models, settings.inference.triton_startup_seconds):
            raise Unavailable(f"{', '.join(models)} not served by Triton at {settings.inference.triton_url}")
        encoder, *multilingual = [TextEncoder(backend, model_name=name) for name in encoder_names]
        # The sequence model's text side reads the content space (similar items' and personal
        # retrieval's): the multilingual one when there is one.
        content = multilingual[0] if multilingual else encoder
        sequence_model = SequenceModel(backend, content.version) if USER_SEQUENCE_ENCODER in models else None
        index = CatalogIndex(
            ProductStore(pool), encoder, settings.fusion, sequence_model,
            multilingual_encoder=multilingual[0] if multilingual else None,
        )
        await index.load()
        rules = RulesKeeper(RuleStore(pool), index.metrics)
        await rules.refresh()
    except BaseException:
        await pool.close()
        await backend.close()
        raise
    servicer = RetrievalServicer(index, settings.default_limit, settings.dense_wait_seconds, rules)
    running = await start_server(
        register=lambda server: retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        listening=Listening.of(settings.server, port),
    )
    # Other replicas' upserts and deletes reach this replica's indexes within a sync period.
    sync = Periodic("catalog sync", index.sync, settings.catalog_sync_seconds, run_first=False)
    sync.start()
    # Merchandising rules written through any replica are in force here within a period.
    rules_refresh = Periodic("rules refresh", rules.refresh, settings.rules_refresh_seconds, run_first=False)
    rules_refresh.start()
    running.on_stop += [sync.stop, rules_refresh.stop, pool.close, backend.close]
    if freeze_heap:
        # The catalogue index is most of the heap; full garbage collections would otherwise
        # stall every search for a time that grows with the catalogue (services.common.heap).
        freezer = HeapFreezer()
        freezer.freeze(index.size)
        heap = Periodic("heap freeze", lambda: freezer.freeze_if_grown(index.size), HEAP_CHECK_SECONDS,
                        run_first=False)
        heap.start()
        running.on_stop.append(heap.stop)
    running.app = index
    await running.set_serving(True)
    return running

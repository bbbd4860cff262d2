"""Builds and runs the query understanding server; SERVING once the vocabulary and the
autocomplete index are loaded."""

from __future__ import annotations

from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2_grpc as qu_pb2_grpc

from services.common.database import create_pool
from services.common.server import Listening, RunningServer, start_server
from services.query_understanding.catalog_source import CatalogVocabularySource
from services.query_understanding.config import QueryUnderstandingSettings
from services.query_understanding.servicer import QueryUnderstandingServicer
from services.query_understanding.suggestion_source import SuggestionSource

SERVICE_NAME = qu_pb2.DESCRIPTOR.services_by_name["QueryUnderstandingService"].full_name


async def create_server(settings: QueryUnderstandingSettings, port: int | None = None) -> RunningServer:
    pool = await create_pool(settings.database_url, max_size=2)
    source = CatalogVocabularySource(
        pool, settings.vocabulary_refresh_seconds, settings.translate_queries, settings.currency_rates
    )
    suggestions = SuggestionSource(pool, settings.suggest)
    source.listeners.append(suggestions.on_catalog)
    await source.refresh()
    await suggestions.refresh_queries()
    source.start()
    suggestions.start()
    servicer = QueryUnderstandingServicer(source, suggestions)
    running = await start_server(
        register=lambda server: qu_pb2_grpc.add_QueryUnderstandingServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        listening=Listening.of(settings.server, port),
    )
    running.on_stop += [pool.close, source.stop, suggestions.stop]
    running.app = source
    await running.set_serving(True)
    return running

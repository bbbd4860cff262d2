"""The local stack that `shelfwise up`, the benchmarks, the evaluations, the simulator and these
tests run: a catalogue sync imports only what changed, and returns only once query understanding
reads the catalogue as it now is (no fixed wait), so the very next query sees a new brand."""

from __future__ import annotations

import dataclasses
import uuid

from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2_grpc as qu_pb2_grpc

from services.common.channels import create_channel
from services.local.catalog_import import demo_catalog_path, read_catalog_file
from tests.support.system import create_database, start_system, system_environment


async def understand(stack, query: str) -> qu_pb2.UnderstandResponse:
    async with create_channel(stack.address("query_understanding")) as channel:
        return await qu_pb2_grpc.QueryUnderstandingServiceStub(channel).Understand(
            qu_pb2.UnderstandRequest(query=query), timeout=10
        )


async def test_a_sync_imports_what_changed_and_returns_once_the_vocabulary_holds_it(postgres_url, model_repository):
    database_url = await create_database(postgres_url, f"stack_{uuid.uuid4().hex[:8]}")
    # A slow refresh: a sync that returned before query understanding read the catalogue
    # would be caught by the first query after it.
    stack = await start_system(system_environment(
        database_url, model_repository, SHELFWISE_VOCABULARY_REFRESH_SECONDS="1.5"
    ))
    try:
        products = read_catalog_file(demo_catalog_path())[:40]
        assert await stack.sync_catalog(products) == (40, 0)
        version = (await understand(stack, "tea")).vocabulary_version
        assert version.startswith("40@"), version

        assert await stack.sync_catalog(products) == (0, 0)  # nothing changed: nothing re-encoded

        renamed = dataclasses.replace(products[0], brand="Zyxquor")
        assert await stack.sync_catalog([renamed, *products[1:]]) == (0, 1)
        response = await understand(stack, "zyxquor")
        assert response.vocabulary_version != version
        assert "Zyxquor" in response.filters.brands, response
    finally:
        await stack.stop()

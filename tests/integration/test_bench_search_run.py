"""`shelfwise bench search` against real servers: the session's four real stage services and a
gateway started with the bench experiment. A short run at a low rate sends every scheduled
request, each served by the arm the bench put it in, and the report shows both configurations
side by side; a gateway without the experiment is reported, not silently measured as BM25.

Nothing here asserts a latency or a rate: only that requests were sent, answered and counted."""

from __future__ import annotations

import json

import pytest

from services.cli.bench.search import BENCH_EXPERIMENT, BM25, FULL, BenchSettings, measure, report
from services.local.synthetic_catalog import generate_queries
from tests.support.eventually import eventually

# Demo-catalogue queries (the session system holds the demo catalogue) plus synthetic ones.
QUERIES = ["red wine", "green tea", "running shoes under $50", "绿茶", "wireles earbuds"] + generate_queries(20)


@pytest.fixture(scope="module")
async def bench_gateway(system, tmp_path_factory):
    from services.gateway.config import GatewaySettings
    from services.gateway.server import create_server

    path = tmp_path_factory.mktemp("bench") / "experiments.json"
    path.write_text(json.dumps(BENCH_EXPERIMENT))
    server = await create_server(GatewaySettings.from_env(dict(system.environ, SHELFWISE_EXPERIMENTS=str(path))), port=0)
    yield f"127.0.0.1:{server.port}"
    await server.stop(grace=1.0)


async def test_a_short_open_loop_run_measures_full_and_bm25_only_side_by_side(bench_gateway):
    # A deadline far above any answer time here, so a slow shared machine cannot fail the test.
    settings = BenchSettings(rate=4, duration=2, warmup=0.5, deadline=30, max_in_flight=64)
    summaries, notes = await measure(bench_gateway, QUERIES, settings, log=lambda line: None)
    assert notes == []
    assert [s.configuration for s in summaries] == [FULL, BM25]
    for summary in summaries:
        assert summary.scheduled == 8
        assert summary.ok == 8 and summary.errors == {}
        assert summary.p50_ms <= summary.p99_ms <= summary.max_ms
    text = report(summaries)
    assert "full pipeline" in text and "BM25-only" in text and "full / bm25" in text


async def test_a_gateway_without_the_bench_experiment_is_reported_not_measured(gateway, system):
    settings = BenchSettings(rate=4, duration=0.5, warmup=0, deadline=30)
    summaries, notes = await measure(system.address("gateway"), QUERIES, settings, log=lambda line: None)
    assert summaries == []
    assert len(notes) == 2 and all("does not serve the arm bench/" in note for note in notes)


async def test_an_interrupted_catalogue_import_goes_on_where_it_stopped(postgres_url, model_repository, tmp_path,
                                                                        monkeypatch):
    """A kill mid-import (here: the import task cancelled) leaves a state that is never ahead of
    PostgreSQL; the next run sends only what is missing and adds up the time."""
    import asyncio
    import uuid

    import asyncpg

    from services.cli.bench import synthetic_import as bench
    from services.cli.bench.synthetic_import import IMPORT_STATE, ImportState, import_synthetic
    from services.retrieval.config import RetrievalSettings
    from services.retrieval.server import create_server
    from tests.support.system import create_database, system_environment

    monkeypatch.setattr(bench, "IMPORT_BATCH", 10)
    items, seed = 60, 11
    database_url = await create_database(postgres_url, f"bench_{uuid.uuid4().hex[:12]}")
    server = await create_server(RetrievalSettings.from_env(system_environment(database_url, model_repository)), port=0)
    address = f"127.0.0.1:{server.port}"
    state_path = tmp_path / IMPORT_STATE
    connection = await asyncpg.connect(database_url)
    try:
        first = asyncio.create_task(import_synthetic(address, items, seed, progress=False,
                                                     state=ImportState(items, seed), state_path=state_path))
        def partly_imported() -> bool:
            assert not first.done(), "the import finished before it could be interrupted"
            return ImportState.read(state_path, items, seed).imported_through >= 20

        await eventually(partly_imported, 120, "the first 20 products imported", interval=0.02)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        stopped = ImportState.read(state_path, items, seed)
        imported = await connection.fetchval("SELECT count(*) FROM products")
        assert 20 <= stopped.imported_through <= imported < items
        assert stopped.seconds > 0
        mark = await connection.fetchval("SELECT now()")
        through, seconds = stopped.imported_through, stopped.seconds

        await import_synthetic(address, items, seed, progress=False, state=stopped, state_path=state_path)
        done = ImportState.read(state_path, items, seed)
        assert done.imported_through == items and done.seconds > seconds
        assert await connection.fetchval("SELECT count(*) FROM products") == items
        # Products before the stopping point were not sent again.
        resent = await connection.fetchval("SELECT count(*) FROM products WHERE updated_at > $1", mark)
        assert resent == items - through
        # Another catalogue's state does not count.
        assert ImportState.read(state_path, items + 1, seed).imported_through == 0
    finally:
        await connection.close()
        await server.stop(grace=1.0)

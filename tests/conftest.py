"""Shared fixtures: a real PostgreSQL (pgserver), the exported ONNX models, and the five real
gRPC servers on port 0 in this process, loaded with the demo catalogue.

Tracing goes to an in-memory exporter installed before any server or channel exists, so
tests can read whole traces.
"""

from __future__ import annotations

import json

from pathlib import Path

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

ROOT = Path(__file__).resolve().parents[1]
MODEL_REPOSITORY = ROOT / "model_repository"
INTEGRATION = ROOT / "tests" / "integration"


def pytest_collection_modifyitems(items) -> None:
    """Every test under tests/integration is `slow` (real servers, PostgreSQL, training): the
    marker is given here, by folder, so a new integration test cannot forget it."""
    for item in items:
        if INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)

SPANS = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(SPANS))
trace.set_tracer_provider(_provider)
METRICS = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[METRICS]))


def metric_points(name: str) -> list:
    """Data points of one metric collected so far (cumulative)."""
    data = METRICS.get_metrics_data()
    return [
        point
        for resource in (data.resource_metrics if data else [])
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    return SPANS


@pytest.fixture(scope="session")
def model_repository() -> Path:
    if not (MODEL_REPOSITORY / "text_encoder" / "1" / "model.onnx").is_file():
        pytest.fail("the text encoder is not exported: run `shelfwise export` first")
    return MODEL_REPOSITORY


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory) -> str:
    from services.local.postgres import EmbeddedPostgres

    postgres = EmbeddedPostgres(tmp_path_factory.mktemp("postgres"))
    url = postgres.start()
    yield url
    postgres.stop()


async def create_database(postgres_url: str, name: str) -> str:
    """A new, empty database `name` in the session's PostgreSQL; returns its URL (for a test
    whose writes must not meet the session system's)."""
    import asyncpg

    connection = await asyncpg.connect(postgres_url)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    base, _, query = postgres_url.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def system_environment(postgres_url: str, model_repository: Path, **overrides: str) -> dict[str, str]:
    environ = {
        "SHELFWISE_DATABASE_URL": postgres_url,
        "SHELFWISE_MODEL_REPOSITORY": str(model_repository),
        "SHELFWISE_POPULARITY_REFRESH_SECONDS": "0.3",
        "SHELFWISE_VOCABULARY_REFRESH_SECONDS": "0.3",
        # Generous stage deadlines: CI machines are small and shared.
        "SHELFWISE_DEADLINE_QUERY_UNDERSTANDING_SECONDS": "5",
        "SHELFWISE_DEADLINE_RETRIEVAL_SECONDS": "10",
        "SHELFWISE_DEADLINE_RANKING_SECONDS": "5",
    }
    environ.update(overrides)
    return environ


async def start_system(environ: dict[str, str]):
    """The five servers in this process on port 0, through the same LocalStack as `shelfwise up`
    (configured by `environ`, which names the database and the model repository)."""
    import tempfile

    from services.local.stack import LocalStack, StackSettings

    stack = LocalStack(StackSettings(
        state_dir=Path(tempfile.mkdtemp(prefix="shelfwise-stack-")),
        model_repository=Path(environ["SHELFWISE_MODEL_REPOSITORY"]), environ=environ,
        database_url=environ["SHELFWISE_DATABASE_URL"], free_ports=False, in_process=True,
    ))
    await stack.start()
    return stack


@pytest.fixture(scope="session")
async def system(postgres_url, model_repository):
    """The system every integration test shares, holding the demo catalogue."""
    from services.local.catalog_import import demo_catalog_path, read_catalog_file

    running = await start_system(system_environment(postgres_url, model_repository))
    await running.sync_catalog(read_catalog_file(demo_catalog_path()))
    yield running
    await running.stop()


@pytest.fixture(scope="session")
async def gateway(system):
    from shelfwise.gateway.v1 import gateway_pb2_grpc

    from services.common.channels import create_channel

    channel = create_channel(system.address("gateway"), 8 * 1024 * 1024)
    yield gateway_pb2_grpc.GatewayServiceStub(channel)
    await channel.close()


@pytest.fixture(scope="session")
async def database(postgres_url):
    import asyncpg

    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=2)
    yield pool
    await pool.close()


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory, model_repository):
    """One real tritonserver (nvidia-pytriton's build, its own venv) for the whole test run, over
    the CPU repository derived from model_repository/. Fails, never skips, if it cannot start."""
    import os

    from services.local.triton import LocalTriton, derive_cpu_repository, ensure_triton_environment

    env_dir = ensure_triton_environment(Path(os.environ.get("SHELFWISE_TRITON_ENV", ROOT / ".venv-triton")))
    work = tmp_path_factory.mktemp("triton")
    derive_cpu_repository(model_repository, work / "repository")
    server = LocalTriton(work / "repository", env_dir, log_path=work / "tritonserver.log")
    server.start(timeout=120)
    yield server
    server.stop()


def require_export(version_dir: Path, *files: str) -> None:
    """Fails (never skips) when `shelfwise export` has not produced these files."""
    missing = [version_dir / name for name in ("model.onnx", *files) if not (version_dir / name).is_file()]
    if missing:
        pytest.fail(f"{', '.join(map(str, missing))} missing: run `shelfwise export` first (or `python -m training.encoders.export`)")


def _untrained_user_sequence_encoder(folder: Path) -> Path:
    from training.rec.sequential_model import ModelConfig, SequentialRecommender, export_user_encoder

    path = folder / "model.onnx"
    export_user_encoder(SequentialRecommender(ModelConfig(num_items=12), content=None), path)
    return path


def _untrained_relevance_ranker(folder: Path) -> Path:
    """A ranker fitted on random features through the real graph builder (the trained one needs
    the benchmark's judgments)."""
    import numpy as np

    from services.ranking.relevance import RELEVANCE_FEATURES
    from training.search.train_ranker import Calibration, JudgedQuery, RankerSettings, fit, ranker_graph

    rng = np.random.default_rng(0)
    queries = [
        JudgedQuery(str(q), str(q), [], rng.random((20, len(RELEVANCE_FEATURES))), rng.integers(0, 2, 20))
        for q in range(20)
    ]
    booster = fit(queries, RankerSettings(n_estimators=5, min_child_samples=5))
    path = folder / "model.onnx"
    path.write_bytes(ranker_graph(booster, Calibration(1.0, 0.0, 0.5, 0.0, 0.0)).SerializeToString())
    metadata = {"model": "relevance_ranker", "features": list(RELEVANCE_FEATURES), "threshold": 0.5}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return path


# How to get a graph of each model that `shelfwise export` may not produce: trained on a shop's
# events (`shelfwise train rec --events`) or judgments (`shelfwise train ranker`), so a fresh
# clone may have no version of it.
UNTRAINED_EXPORTS = {
    "user_sequence_encoder": _untrained_user_sequence_encoder,
    "relevance_ranker": _untrained_relevance_ranker,
}


def export_untrained(model: str, folder: Path) -> Path:
    """`folder/model.onnx`: a freshly initialised `model` through its real export function, to
    check its config and serving on a clone where nothing has been trained on events yet."""
    folder.mkdir(parents=True, exist_ok=True)
    return UNTRAINED_EXPORTS[model](folder)


def complete_model_repository(source: Path, target: Path) -> Path:
    """`source` with a version of every model it configures: exported models are linked as they
    are; a model trained on shop data that has no version yet gets version 1, freshly
    initialised. Triton tests serve this, so that they cover every config on a fresh clone."""
    from services.common.inference import TRAINED_ON_SHOP_DATA

    target.mkdir(parents=True)
    for model_dir in sorted(path.parent for path in source.glob("*/config.pbtxt")):
        exported = any(p.name.isdigit() and (p / "model.onnx").is_file() for p in model_dir.iterdir())
        if exported or model_dir.name not in TRAINED_ON_SHOP_DATA:
            (target / model_dir.name).symlink_to(model_dir, target_is_directory=True)
            continue
        (target / model_dir.name).mkdir()
        (target / model_dir.name / "config.pbtxt").write_bytes((model_dir / "config.pbtxt").read_bytes())
        export_untrained(model_dir.name, target / model_dir.name / "1")
    return target

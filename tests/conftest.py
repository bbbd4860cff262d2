"""Shared fixtures: a real PostgreSQL (pgserver), the exported ONNX models, the five real gRPC
servers on port 0 in this process loaded with the demo catalogue, and a real Triton. What they
are built from lives in tests/support/ (test modules import it from there, never from here).

Tracing goes to an in-memory exporter installed before any server or channel exists
(tests/support/telemetry.py, imported first), so tests can read whole traces.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.support.paths import MODEL_REPOSITORY, ROOT
from tests.support.system import start_system, system_environment
from tests.support.telemetry import SPANS

INTEGRATION = ROOT / "tests" / "integration"


def pytest_collection_modifyitems(items) -> None:
    """Every test under tests/integration is `slow` (real servers, PostgreSQL, training): the
    marker is given here, by folder, so a new integration test cannot forget it."""
    for item in items:
        if INTEGRATION in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)


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



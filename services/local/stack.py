"""The whole system on one machine: PostgreSQL, the five services and, optionally, a local
Triton serving the models. One `LocalStack` is what `shelfwise up`, the search benchmark, the
search evaluation's full pipeline, the simulator and the tests run.

Nothing here waits a fixed time. A service counts as started when its gRPC health check says
SERVING; a catalogue import counts as done when query understanding reports a vocabulary read
from the products table as it now is (`UnderstandResponse.vocabulary_version`), so the first
query after it is spelled and filtered against the whole catalogue."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from services.local.catalog_import import changed_products, import_products
from services.local.in_process import InProcessServices
from services.local.postgres import EmbeddedPostgres
from services.local.processes import SERVICE_ORDER, ServiceProcesses, free_port_environment


@dataclass(frozen=True)
class StackSettings:
    """Where the stack keeps its state and how it runs its services."""

    # postgres/ (for an embedded PostgreSQL), logs/ and triton/ live here.
    state_dir: Path
    model_repository: Path
    # Service settings (SHELFWISE_*) on top of the defaults, e.g. refresh periods, experiments.
    environ: Mapping[str, str] = field(default_factory=dict)
    # A running PostgreSQL to use; None starts an embedded one in state_dir/postgres.
    database_url: str | None = None
    # Every service on a free port; False keeps their default ports (`shelfwise up`).
    free_ports: bool = True
    # The servers inside this process on port 0 (the tests) instead of child processes.
    in_process: bool = False
    # Serve the models through a local Triton run from this virtual environment.
    triton_env_dir: Path | None = None
    # Child processes run under cProfile, each writing <service>.prof here when it exits.
    profile_dir: Path | None = None


class LocalStack:
    """Start with `await stack.start()` (or `async with LocalStack(settings) as stack`), stop
    with `await stack.stop()`. `environ` is the services' configuration as they run it."""

    def __init__(self, settings: StackSettings):
        self.settings = settings
        self.environ: dict[str, str] = dict(free_port_environment() if settings.free_ports else {})
        self.environ.update(settings.environ)
        self.database_url = settings.database_url
        self._postgres: EmbeddedPostgres | None = None
        self.triton = None
        self._services: ServiceProcesses | InProcessServices | None = None

    @property
    def log_dir(self) -> Path:
        return self.settings.state_dir / "logs"

    async def start(
        self, services: tuple[str, ...] = SERVICE_ORDER, replicas: Mapping[str, int] | None = None,
        timeout: float = 120.0,
    ) -> None:
        """Starts PostgreSQL and Triton when they are not running yet, then `services` (all five
        by default) in SERVICE_ORDER, and returns once each is SERVING. A second call starts
        more services (a benchmark imports its catalogue before query understanding starts).
        `replicas`: child processes per service, called round robin by the ones after them."""
        if self.database_url is None:
            self._postgres = EmbeddedPostgres(self.settings.state_dir / "postgres")
            self.database_url = await asyncio.to_thread(self._postgres.start)
        self.environ["SHELFWISE_DATABASE_URL"] = self.database_url
        self.environ["SHELFWISE_MODEL_REPOSITORY"] = str(Path(self.settings.model_repository).resolve())
        if self.settings.triton_env_dir is not None and self.triton is None:
            await self._start_triton()
        if self._services is None:
            self._services = self._runner()
        try:
            if isinstance(self._services, InProcessServices):
                await self._services.start(services, timeout)
            else:
                await self._services.start(timeout, services, replicas)
        except BaseException:
            await self.stop()
            raise

    def _runner(self) -> ServiceProcesses | InProcessServices:
        if self.settings.in_process:
            return InProcessServices(self.environ)
        # The processes read this same dict, so addresses of replicas reach later services.
        return ServiceProcesses(
            self.database_url, Path(self.settings.model_repository).resolve(), self.log_dir,
            environ=self.environ, profile_dir=self.settings.profile_dir,
        )

    async def _start_triton(self) -> None:
        from services.local.triton import LocalTriton, derive_cpu_repository, ensure_triton_environment

        work = self.settings.state_dir / "triton"
        env_dir = await asyncio.to_thread(ensure_triton_environment, self.settings.triton_env_dir)
        self.triton_models = derive_cpu_repository(self.settings.model_repository, work / "repository")
        self.triton = LocalTriton(work / "repository", env_dir, log_path=self.log_dir / "tritonserver.log")
        await asyncio.to_thread(self.triton.start)
        self.environ.update({"SHELFWISE_INFERENCE": "triton", "SHELFWISE_TRITON_URL": self.triton.grpc_url})

    def address(self, service: str) -> str:
        return self._services.address(service)

    @property
    def servers(self) -> dict:
        """The in-process servers by service name (in-process stacks only)."""
        if not isinstance(self._services, InProcessServices):
            raise TypeError("servers exist only for a stack started with in_process=True")
        return self._services.servers

    @property
    def processes(self) -> dict:
        """The child processes by name (`retrieval`, `retrieval-2`, ...); none before the start,
        after the stop, or for an in-process stack."""
        return self._services.processes if isinstance(self._services, ServiceProcesses) else {}

    async def restart(self, service: str, timeout: float = 120.0) -> None:
        """Starts a child-process service again on its port (after it was killed) and waits
        until it is SERVING."""
        if not isinstance(self._services, ServiceProcesses):
            raise TypeError("restart applies to a stack of child processes")
        await self._services.restart(service, timeout)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time each child process has used so far (see ServiceProcesses.cpu_seconds)."""
        return self._services.cpu_seconds() if isinstance(self._services, ServiceProcesses) else {}

    async def sync_catalog(self, products, batch_size: int = 500, progress: bool = False) -> tuple[int, int]:
        """Upserts the products retrieval does not hold exactly as given (all of them into an
        empty database) and waits for the vocabulary; returns (inserted, updated)."""
        changed = await changed_products(products, self.address("retrieval"))
        counts = await import_products(changed, self.address("retrieval"), batch_size, progress) if changed else (0, 0)
        await self.wait_for_vocabulary()
        return counts

    async def wait_for_vocabulary(self, timeout: float = 600.0) -> str:
        """Returns once query understanding's vocabulary was read from the products table as it
        is now (its version); raises TimeoutError after `timeout` seconds, saying what it saw."""
        import asyncpg
        from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
        from shelfwise.query_understanding.v1 import query_understanding_pb2_grpc as qu_pb2_grpc

        from services.common.channels import create_channel
        from services.query_understanding.catalog_source import CATALOG_STATE_SQL, catalog_version

        connection = await asyncpg.connect(self.database_url)
        try:
            expected = catalog_version(*await connection.fetchrow(CATALOG_STATE_SQL))
        finally:
            await connection.close()
        deadline = time.monotonic() + timeout
        async with create_channel(self.address("query_understanding")) as channel:
            stub = qu_pb2_grpc.QueryUnderstandingServiceStub(channel)
            while True:
                response = await stub.Understand(qu_pb2.UnderstandRequest(query="vocabulary"), timeout=30)
                if response.vocabulary_version == expected:
                    return expected
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"query understanding still reads the catalogue as {response.vocabulary_version!r} after "
                        f"{timeout:.0f}s, the products table is at {expected!r}: see its log in {self.log_dir}"
                    )
                await asyncio.sleep(0.1)

    async def stop(self) -> dict[str, int]:
        """Stops the services (the gateway first, so its last impressions reach events), then
        Triton and an embedded PostgreSQL. Returns child processes' exit codes (0: clean)."""
        codes: dict[str, int] = {}
        if isinstance(self._services, ServiceProcesses):
            codes = await asyncio.to_thread(self._services.stop)
        elif isinstance(self._services, InProcessServices):
            await self._services.stop()
        self._services = None
        if self.triton is not None:
            await asyncio.to_thread(self.triton.stop)
            self.triton = None
        if self._postgres is not None:
            await asyncio.to_thread(self._postgres.stop)
            self._postgres = None
            self.database_url = self.settings.database_url
        return codes

    async def __aenter__(self) -> "LocalStack":
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()


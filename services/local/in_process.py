"""The five services as gRPC servers inside the calling process, each on a port the system
picks (port 0): what the tests run, so that they can read a server's state and its traces.
Started in the same order as the child processes and counted as started by the same health
check; `services.local.stack.LocalStack` is the one way the project starts them."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

from services.common.channels import wait_until_serving
from services.local.processes import SERVICE_ORDER

# Each service's settings class, found as services.<name>.config.<class>.
SETTINGS_CLASSES = {
    "events": "EventsSettings",
    "retrieval": "RetrievalSettings",
    "query_understanding": "QueryUnderstandingSettings",
    "ranking": "RankingSettings",
    "gateway": "GatewaySettings",
}


async def create_service_server(service: str, environ: dict[str, str], port: int = 0):
    """One service's server, started on `port` (0: any free one), configured from `environ`."""
    settings_class = getattr(importlib.import_module(f"services.{service}.config"), SETTINGS_CLASSES[service])
    create_server = importlib.import_module(f"services.{service}.server").create_server
    return await create_server(settings_class.from_env(environ), port=port)


@dataclass
class InProcessServices:
    """`environ` is every service's configuration; each started service's address is added to
    it (SHELFWISE_<SERVICE>_ADDRESS), so the services started after it call it."""

    environ: dict[str, str]
    servers: dict = field(default_factory=dict)

    async def start(self, services: tuple[str, ...] = SERVICE_ORDER, timeout: float = 120.0) -> None:
        for service in (name for name in SERVICE_ORDER if name in services):
            server = await create_service_server(service, self.environ)
            self.servers[service] = server
            self.environ[f"SHELFWISE_{service.upper()}_ADDRESS"] = f"127.0.0.1:{server.port}"
            await wait_until_serving(self.address(service), timeout)

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.servers[service].port}"

    async def stop(self, grace: float = 1.0) -> None:
        """The gateway first, so that its last impressions still reach a running events service."""
        for service in reversed(SERVICE_ORDER):
            if service in self.servers:
                await self.servers.pop(service).stop(grace=grace)

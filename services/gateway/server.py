"""Builds and runs the gateway server; SERVING once retrieval (the stage it cannot do
without) answers its health check."""

from __future__ import annotations

import logging

from grpc_health.v1 import health_pb2_grpc
from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.background import Periodic
from services.common.channels import create_channel, is_serving
from services.common.popularity import events_popularity
from services.common.server import Listening, RunningServer, start_server
from services.gateway.composer import Composer
from services.gateway.config import GatewaySettings
from services.gateway.downstream import Downstream
from services.gateway.servicer import GatewayServicer

log = logging.getLogger(__name__)

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


class RetrievalHealth:
    """Keeps the gateway's health in step with retrieval's: without retrieval there is nothing
    to show, so load balancers should send Search elsewhere."""

    def __init__(self, running: RunningServer, retrieval_address: str, interval: float = 2.0):
        self._running = running
        self._channel = create_channel(retrieval_address)
        self._stub = health_pb2_grpc.HealthStub(self._channel)
        self._serving: bool | None = None
        self._checker = Periodic("retrieval health", self.check, interval)

    async def check(self) -> None:
        serving = await is_serving(self._stub)
        if serving != self._serving:
            log.info("retrieval %s: gateway %s", "up" if serving else "down", "SERVING" if serving else "NOT_SERVING")
            await self._running.set_serving(serving)
            self._serving = serving

    def start(self) -> None:
        self._checker.start()

    async def stop(self) -> None:
        await self._checker.stop()
        await self._channel.close()


async def create_server(settings: GatewaySettings, port: int | None = None) -> RunningServer:
    downstream = Downstream(settings)
    popularity = events_popularity(downstream.events, settings.popularity)
    popularity.start()
    composer = Composer(
        downstream, settings.deadlines, settings.candidates, settings.experiments, settings.exploration, popularity
    )
    servicer = GatewayServicer(composer)
    running = await start_server(
        register=lambda server: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        listening=Listening.of(settings.server, port),
    )
    running.app = composer
    health = RetrievalHealth(running, settings.retrieval_address)
    health.start()

    async def flush_impressions() -> None:
        await composer.close(timeout=settings.deadlines.events)

    running.on_stop += [downstream.close, flush_impressions, health.stop, popularity.stop]
    return running

"""Builds and runs the gateway server; SERVING once retrieval (the stage it cannot do
without) answers its health check."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health_pb2_grpc
from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.channels import create_channel, is_serving
from services.common.server import RunningServer, start_server
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
        self._interval = interval
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        async def loop() -> None:
            serving = None
            while True:
                now_serving = await is_serving(self._stub)
                if now_serving != serving:
                    log.info("retrieval %s: gateway %s", "up" if now_serving else "down",
                             "SERVING" if now_serving else "NOT_SERVING")
                    await self._running.set_serving(now_serving)
                    serving = now_serving
                await asyncio.sleep(self._interval)

        self._task = asyncio.create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._channel.close()


async def create_server(settings: GatewaySettings, port: int | None = None) -> RunningServer:
    downstream = Downstream(settings)
    composer = Composer(downstream, settings.deadlines, settings.candidates)
    servicer = GatewayServicer(composer)
    running = await start_server(
        register=lambda server: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        host=settings.server.host,
        port=settings.server.port if port is None else port,
        max_message_bytes=settings.server.max_message_bytes,
    )
    running.app = composer
    health = RetrievalHealth(running, settings.retrieval_address)
    health.start()

    async def flush_impressions() -> None:
        await composer.wait_for_impressions(timeout=settings.deadlines.events)

    running.on_stop += [downstream.close, flush_impressions, health.stop]
    return running

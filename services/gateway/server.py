"""Builds and runs the gateway server; SERVING once retrieval (the stage it cannot do
without) answers its health check."""

from __future__ import annotations

import asyncio
import logging

from grpc_health.v1 import health_pb2, health_pb2_grpc
from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.channels import create_channel
from services.common.server import RunningServer, start_server
from services.gateway.composer import Composer
from services.gateway.config import GatewaySettings
from services.gateway.downstream import Downstream
from services.gateway.servicer import GatewayServicer

log = logging.getLogger(__name__)

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


async def wait_until_serving(address: str, timeout: float) -> None:
    channel = create_channel(address)
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except Exception:  # not up yet
                pass
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{address} did not become SERVING within {timeout:.0f}s")
            await asyncio.sleep(0.2)
    finally:
        await channel.close()


class _Health:
    """Keeps the gateway's health in step with retrieval's."""

    def __init__(self, running: RunningServer, retrieval_address: str):
        self._running = running
        self._address = retrieval_address
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        async def loop() -> None:
            serving = None
            while True:
                try:
                    await wait_until_serving(self._address, timeout=2.0)
                    now_serving = True
                except Exception:
                    now_serving = False
                if now_serving != serving:
                    await self._running.set_serving(now_serving)
                    serving = now_serving
                await asyncio.sleep(2.0)

        self._task = asyncio.create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


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
    health = _Health(running, settings.retrieval_address)
    health.start()

    async def flush_impressions() -> None:
        await composer.wait_for_impressions(timeout=settings.deadlines.events)

    running.on_stop += [downstream.close, flush_impressions, health.stop]
    return running

"""Builds and runs the gateway server; SERVING once retrieval (the stage it cannot do
without) answers its health check."""

from __future__ import annotations

import logging

from grpc_health.v1 import health_pb2_grpc
from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.channels import create_channel, is_serving
from services.common.dependency_health import DependencyHealth
from services.common.popularity import events_popularity
from services.common.server import Listening, RunningServer, start_server
from services.gateway.composer import Composer, FlowPolicies
from services.gateway.config import GatewaySettings
from services.gateway.downstream import Downstream
from services.gateway.servicer import GatewayServicer

log = logging.getLogger(__name__)

SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["GatewayService"].full_name


async def create_server(settings: GatewaySettings, port: int | None = None) -> RunningServer:
    downstream = Downstream(settings)
    popularity = events_popularity(downstream.events, settings.popularity)
    popularity.start()
    composer = Composer(
        downstream, settings.deadlines, settings.candidates,
        FlowPolicies(settings.experiments, settings.exploration, settings.recommend_rules), popularity,
    )
    servicer = GatewayServicer(composer)
    running = await start_server(
        register=lambda server: gateway_pb2_grpc.add_GatewayServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        listening=Listening.of(settings.server, port),
    )
    running.app = composer
    # Without retrieval there is nothing to show: NOT_SERVING, so load balancers send Search elsewhere.
    retrieval_channel = create_channel(settings.retrieval_address)
    retrieval_health = health_pb2_grpc.HealthStub(retrieval_channel)
    health = DependencyHealth(running, "retrieval", lambda: is_serving(retrieval_health))
    health.start()

    async def flush_impressions() -> None:
        await composer.close(timeout=settings.deadlines.events)

    running.on_stop += [downstream.close, flush_impressions, health.stop, retrieval_channel.close, popularity.stop]
    return running

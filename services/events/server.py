"""Builds and runs the events server over a PostgreSQL pool (migrations applied at start-up)."""

from __future__ import annotations

from shelfwise.events.v1 import events_pb2, events_pb2_grpc

from services.common.database import create_pool
from services.common.server import RunningServer, start_server
from services.events.config import EventsSettings
from services.events.servicer import EventsServicer
from services.events.store import EventStore

SERVICE_NAME = events_pb2.DESCRIPTOR.services_by_name["EventsService"].full_name


async def create_server(settings: EventsSettings, port: int | None = None) -> RunningServer:
    pool = await create_pool(settings.database_url, max_size=settings.pool_size)
    servicer = EventsServicer(EventStore(pool))
    running = await start_server(
        register=lambda server: events_pb2_grpc.add_EventsServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        host=settings.server.host,
        port=settings.server.port if port is None else port,
        max_message_bytes=settings.server.max_message_bytes,
    )
    running.on_stop.append(pool.close)
    await running.set_serving(True)
    return running

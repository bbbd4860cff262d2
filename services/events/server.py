"""Builds and runs the events server over a PostgreSQL pool (migrations applied at start-up),
with the monthly event partitions created ahead at start-up and then periodically."""

from __future__ import annotations

import logging

from shelfwise.events.v1 import events_pb2, events_pb2_grpc

from services.common.background import Periodic
from services.common.database import create_pool
from services.common.dependency_health import DependencyHealth
from services.common.server import Listening, RunningServer, start_server
from services.events.config import EventsSettings
from services.events.partitions import ensure_partitions
from services.events.queries import EventQueries
from services.events.servicer import EventsServicer
from services.events.store import EventStore

log = logging.getLogger(__name__)

SERVICE_NAME = events_pb2.DESCRIPTOR.services_by_name["EventsService"].full_name


async def create_server(settings: EventsSettings, port: int | None = None) -> RunningServer:
    pool = await create_pool(settings.database_url, max_size=settings.pool_size)

    async def create_partitions() -> None:
        created = await ensure_partitions(pool, settings.partition_months_ahead)
        if created:
            log.info("created event partitions %s", ", ".join(created))

    try:
        await create_partitions()
    except BaseException:
        await pool.close()
        raise
    store = EventStore(pool, settings.write_method, settings.write_retry_seconds)
    servicer = EventsServicer(store, EventQueries(pool), settings.write_retry_seconds)
    running = await start_server(
        register=lambda server: events_pb2_grpc.add_EventsServiceServicer_to_server(servicer, server),
        service_names=[SERVICE_NAME],
        listening=Listening.of(settings.server, port),
    )
    # A month rolls over while the service runs: keep partitions ahead of it. Events of a month
    # without a partition still land in DEFAULT, so a missed round loses nothing.
    partitions = Periodic("event partitions", create_partitions, settings.partition_check_seconds, run_first=False)
    partitions.start()
    # Without its database nothing can be stored: NOT_SERVING until it answers again (callers
    # of a replica whose database is down go to another; the gateway buffers impressions).
    health = DependencyHealth(running, "database", lambda: pool.fetchval("SELECT true"), timeout=5.0)
    running.on_stop.append(pool.close)
    running.on_stop.append(partitions.stop)
    running.on_stop.append(health.stop)
    await running.set_serving(True)
    health.start()
    return running

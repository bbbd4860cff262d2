"""`shelfwise bench events`: events per second ingested through the events gRPC service, with
the COPY write path and the unnest INSERT path side by side in one run.

Each write path gets its own events server (in this process, port 0) on the same PostgreSQL
(embedded pgserver in a temporary directory unless --database-url is given). For each batch
size, the two paths take turns (unnest, copy, unnest, copy, ...) so that a table that grows
during the run or a neighbour's load favours neither; a cell is the median of its rounds.
Impressions look like the gateway's: 10 products each, with logged ranking features. The
client runs in the same process, so the figures are for the whole loop on this machine.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from shelfwise.events.v1 import events_pb2, events_pb2_grpc

METHODS = ("unnest", "copy")
FEATURES = ("bm25", "dense_similarity", "popularity", "personal_affinity", "brand_match")


def _impressions(run: str, count: int) -> list[events_pb2.Impression]:
    impressions = []
    for index in range(count):
        request_id = f"bench-{run}-{index}"
        message = events_pb2.Impression(
            event_id=f"impression-{request_id}",
            request_id=request_id,
            user_id=f"user-{index % 997}",
            session_id=f"session-{index % 4999}",
            surface=events_pb2.SURFACE_SEARCH,
            query="green tea",
            product_ids=[f"product-{(index * 7 + k) % 5000}" for k in range(10)],
            first_position=1,
            model_version="text_encoder=bench,ranker=bench",
            features=[
                events_pb2.ProductFeatures(values={name: 0.1 * (k + 1) + j for j, name in enumerate(FEATURES)})
                for k in range(10)
            ],
        )
        message.occurred_at.GetCurrentTime()
        impressions.append(message)
    return impressions


async def _ingest(stub, impressions, batch_size: int, concurrency: int, stream: bool) -> float:
    """Sends the impressions in batches from `concurrency` clients; returns events per second."""
    batches = [impressions[i : i + batch_size] for i in range(0, len(impressions), batch_size)]
    queue: asyncio.Queue = asyncio.Queue()
    for batch in batches:
        queue.put_nowait(batch)

    async def unary_client() -> None:
        while not queue.empty():
            batch = queue.get_nowait()
            await stub.LogEvents(events_pb2.LogEventsRequest(impressions=batch), timeout=60)

    async def stream_client() -> None:
        async def requests():
            sequence = 0
            while not queue.empty():
                sequence += 1
                yield events_pb2.StreamEventsRequest(sequence=sequence, impressions=queue.get_nowait())

        async for _ in stub.StreamEvents(requests(), timeout=600):
            pass

    started = time.perf_counter()
    await asyncio.gather(*((stream_client if stream else unary_client)() for _ in range(concurrency)))
    return len(impressions) / (time.perf_counter() - started)


async def bench_events(
    database_url: str | None, events: int, batch_sizes: list[int], concurrency: int, rounds: int
) -> str:
    from services.local.postgres import EmbeddedPostgres
    from services.common.channels import create_channel
    from services.events.config import EventsSettings
    from services.events.server import create_server

    data_dir = None
    postgres = None
    if database_url is None:
        data_dir = Path(tempfile.mkdtemp(prefix="shelfwise-bench-events-"))
        postgres = EmbeddedPostgres(data_dir / "postgres")
        database_url = postgres.start()
    servers, channels, stubs = {}, [], {}
    try:
        for method in METHODS:
            environ = {"SHELFWISE_DATABASE_URL": database_url, "SHELFWISE_EVENTS_WRITE_METHOD": method}
            servers[method] = await create_server(EventsSettings.from_env(environ), port=0)
            channel = create_channel(f"127.0.0.1:{servers[method].port}", 64 * 1024 * 1024)
            channels.append(channel)
            stubs[method] = events_pb2_grpc.EventsServiceStub(channel)
        # Warm-up: connections, prepared statements, the first partition pages.
        for method in METHODS:
            await _ingest(stubs[method], _impressions(f"warmup-{method}-{uuid.uuid4().hex[:6]}", 200), 100, 2, False)

        rows = []
        for stream in (False, True):
            for batch_size in batch_sizes:
                rates: dict[str, list[float]] = {method: [] for method in METHODS}
                for _ in range(rounds):
                    for method in METHODS:
                        impressions = _impressions(uuid.uuid4().hex[:10], events)
                        rates[method].append(await _ingest(stubs[method], impressions, batch_size, concurrency, stream))
                unnest, copy = (statistics.median(rates[m]) for m in METHODS)
                rows.append(("StreamEvents" if stream else "LogEvents", batch_size, unnest, copy, copy / unnest))
    finally:
        for channel in channels:
            await channel.close()
        for server in servers.values():
            await server.stop()
        if postgres is not None:
            postgres.stop()
            shutil.rmtree(data_dir, ignore_errors=True)

    lines = [
        f"events ingested through the events gRPC service: {events} impressions (10 products, 5 features each) "
        f"per measurement, {concurrency} concurrent clients, median of {rounds} alternating rounds",
        f"{'rpc':<13} {'batch':>6} {'unnest INSERT ev/s':>19} {'COPY ev/s':>10} {'COPY/unnest':>12}",
    ]
    for rpc, batch_size, unnest, copy, ratio in rows:
        lines.append(f"{rpc:<13} {batch_size:>6} {unnest:>19,.0f} {copy:>10,.0f} {ratio:>11.2f}x")
    return "\n".join(lines)

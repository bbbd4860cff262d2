"""`shelfwise bench suggest`: open-loop load on the gateway's Suggest over a synthetic catalogue,
with the latency of the index look-up alone beside it.

The bench starts its own system on loopback (embedded PostgreSQL, events, retrieval, query
understanding and the gateway as child processes on free ports). Suggest needs no embeddings:
query understanding builds its index from the products table and the query log, so the
synthetic catalogue (`services.local.synthetic_catalog`, ``--items`` products; the report says
it is synthetic) is written straight into the products table after retrieval has started on an
empty one (retrieval only has to be up for the gateway to serve, and its catalogue sync is
slowed so it does not embed the rows written behind its back). A query log is logged through
the events service: ``--searches`` synthetic searches by ``--shoppers`` shoppers, each followed
by a click, so the queries that enough shoppers searched (SHELFWISE_SUGGEST_MIN_USERS) are
suggested too. Then query understanding and the gateway start, and Suggest is sent open loop
(`open_loop.py`: fixed arrival rate, latency from the scheduled send time) with prefixes of 1-10
characters of other synthetic queries, as a search box sends them keystroke by keystroke. CPU
time per request of the gateway and of query understanding comes from /proc.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path

from services.cli.bench.open_loop import OK, Outcome, percentile, run_open_loop, summarize
from services.local.synthetic_catalog import DESCRIPTION, generate_products, generate_queries

PRODUCTS_SQL = """
INSERT INTO products (id, title, description, brand, category, price, currency, attributes, locale, extra)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::float8[], $7::text[],
                     $8::jsonb[], $9::text[], $10::jsonb[])
ON CONFLICT (id) DO NOTHING
"""
EVENT_BATCH = 500


async def write_products(database_url: str, items: int, seed: int) -> list[str]:
    """The synthetic catalogue into the products table; returns the product ids."""
    import asyncpg

    products = list(generate_products(items, seed))
    columns = [
        [p.id for p in products], [p.title for p in products], [p.description for p in products],
        [p.brand for p in products], [p.category for p in products], [float(p.price) for p in products],
        [p.currency for p in products], [json.dumps(dict(p.attributes)) for p in products],
        [p.locale for p in products], [json.dumps(dict(p.extra)) for p in products],
    ]
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(PRODUCTS_SQL, *columns)
    finally:
        await connection.close()
    return columns[0]


async def log_searches(events_address: str, product_ids: list[str], searches: int, shoppers: int, seed: int) -> None:
    """`searches` synthetic searches (a query, a shopper, one click on the first result) through
    the events service, as the gateway and Track would log them."""
    from shelfwise.events.v1 import events_pb2, events_pb2_grpc

    from services.common.channels import create_channel

    rng = random.Random(f"suggest-log:{seed}")
    impressions, clicks = [], []
    for number, query in enumerate(generate_queries(searches, seed)):
        request_id = f"bench-suggest-{seed}-{number}"
        user = f"bench-shopper-{rng.randrange(shoppers)}"
        product = product_ids[rng.randrange(len(product_ids))]
        impression = events_pb2.Impression(
            event_id=f"impression-{request_id}", request_id=request_id, user_id=user,
            surface=events_pb2.SURFACE_SEARCH, query=query, product_ids=[product], first_position=1,
        )
        impression.occurred_at.GetCurrentTime()
        click = events_pb2.Interaction(
            event_id=f"click-{request_id}", type=events_pb2.INTERACTION_TYPE_CLICK, request_id=request_id,
            product_id=product, position=1, user_id=user,
        )
        click.occurred_at.GetCurrentTime()
        impressions.append(impression)
        clicks.append(click)
    async with create_channel(events_address, 16 * 1024 * 1024) as channel:
        stub = events_pb2_grpc.EventsServiceStub(channel)
        for start in range(0, len(impressions), EVENT_BATCH):
            await stub.LogEvents(events_pb2.LogEventsRequest(impressions=impressions[start : start + EVENT_BATCH]), timeout=60)
        for start in range(0, len(clicks), EVENT_BATCH):
            await stub.LogEvents(events_pb2.LogEventsRequest(interactions=clicks[start : start + EVENT_BATCH]), timeout=60)


def typed_prefixes(count: int, seed: int) -> list[str]:
    """What search boxes send: the first 1-10 characters of synthetic queries (their own stream,
    not the logged one), about a third of them 4 or more characters long."""
    rng = random.Random(f"suggest-prefixes:{seed}")
    return [query[: rng.randint(1, 10)] for query in generate_queries(count, seed + 1)]


def suggest_caller(stub, prefixes: list[str], deadline: float):
    import grpc
    from shelfwise.gateway.v1 import gateway_pb2

    async def call(number: int) -> Outcome:
        try:
            await stub.Suggest(gateway_pb2.SuggestRequest(prefix=prefixes[number % len(prefixes)], limit=10),
                               timeout=deadline)
        except grpc.aio.AioRpcError as error:
            return Outcome(error.code().name)
        return Outcome(OK)

    return call


def index_lookup_ms(database_products: list[dict], prefixes: list[str]) -> tuple[float, float, float]:
    """(build seconds, p50 ms, p99 ms) of the index alone: built from the same catalogue, the same
    prefixes looked up in this process (no gRPC, no query log)."""
    from services.query_understanding.suggestions import SuggestionIndex, catalogue_candidates

    started = time.perf_counter()
    index = SuggestionIndex(catalogue_candidates(database_products))
    build = time.perf_counter() - started
    took = []
    for prefix in prefixes:
        started = time.perf_counter()
        index.suggest(prefix, 10)
        took.append((time.perf_counter() - started) * 1000)
    return build, percentile(took, 0.5), percentile(took, 0.99)


async def bench_suggest(items: int, rate: float, duration: float, searches: int, seed: int = 7,
                        model_repository: Path = Path("model_repository")) -> str:
    from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    from services.common.channels import create_channel
    from services.local.stack import LocalStack, StackSettings

    prefixes = typed_prefixes(max(1, int(rate * duration)), seed)
    with tempfile.TemporaryDirectory(prefix="shelfwise-bench-suggest-") as folder:
        stack = LocalStack(StackSettings(
            state_dir=Path(folder), model_repository=model_repository,
            # Retrieval must not embed the rows written straight into the table during the run.
            environ={"SHELFWISE_CATALOG_SYNC_SECONDS": "86400"},
        ))
        try:
            await stack.start(services=("events", "retrieval"), timeout=600)
            ids = await write_products(stack.database_url, items, seed)
            await log_searches(stack.address("events"), ids, searches, max(1, searches // 8), seed)
            started = time.perf_counter()
            await stack.start(services=("query_understanding", "gateway"), timeout=600)
            start_seconds = time.perf_counter() - started
            async with create_channel(stack.address("gateway")) as channel:
                stub = gateway_pb2_grpc.GatewayServiceStub(channel)
                probe = await stub.Suggest(gateway_pb2.SuggestRequest(prefix="a"), timeout=5)
                await run_open_loop(suggest_caller(stub, prefixes, 1.0), rate, min(3.0, duration), 64)  # warm-up
                before = stack.cpu_seconds()
                result = await run_open_loop(suggest_caller(stub, prefixes, 1.0), rate, duration, 64)
                after = stack.cpu_seconds()
        finally:
            await stack.stop()
    used = {name: after[name] - before[name] for name in ("gateway", "query_understanding") if name in after}
    summary = summarize("suggest", result, used)
    products = [{"title": p.title, "brand": p.brand, "category": p.category} for p in generate_products(items, seed)]
    build, lookup_p50, lookup_p99 = index_lookup_ms(products, prefixes)
    cpu = summary.cpu_ms_per_request
    return "\n".join([
        f"Suggest, open loop through the gateway: {rate:g} requests/s for {duration:g}s (after a warm-up), "
        f"deadline 1s, limit 10; {os.cpu_count()} CPUs",
        f"catalogue: {items:,} products, {DESCRIPTION}, seed {seed}; query log: {searches:,} synthetic searches with "
        f"a click by {max(1, searches // 8):,} shoppers; prefixes: 1-10 characters of other synthetic queries",
        f"query understanding and gateway SERVING in {start_seconds:.1f}s (reading the catalogue and the query log); "
        f"index {probe.index_version} (queries= those searched by enough shoppers)",
        f"gateway Suggest: p50 {summary.p50_ms:.1f} ms, p95 {summary.p95_ms:.1f} ms, p99 {summary.p99_ms:.1f} ms, "
        f"max {summary.max_ms:.1f} ms; {summary.ok}/{summary.scheduled} OK, errors {summary.errors or 'none'}",
        f"CPU ms per request: gateway {cpu.get('gateway', float('nan')):.2f}, query understanding "
        f"{cpu.get('query_understanding', float('nan')):.2f}",
        f"index alone (this process, catalogue only): built in {build:.2f}s, look-up p50 {lookup_p50:.3f} ms, "
        f"p99 {lookup_p99:.3f} ms",
    ])

"""The metrics an operator reads: per-RPC counts and latencies on every server, the gateway's
stage latencies and impression queue, events ingested and refused, the retrieval index, and
the Triton client's attempts and retries.

The in-memory reader of tests/support/telemetry.py is cumulative and shared by the whole session, so
every check compares a count before and after the calls under test.
"""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.sdk.metrics.export import HistogramDataPoint
from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.common.channels import create_channel
from services.common.errors import Unavailable
from services.common.metrics import DURATION_BUCKETS_MS
from tests.support.telemetry import metric_points

GATEWAY = "shelfwise.gateway.v1.GatewayService"
OK = grpc.StatusCode.OK.value[0]
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT.value[0]
STAGES = ("query_understanding", "retrieval", "ranking")


def total(name: str, attributes: dict | None = None) -> float:
    """Counters and gauges: the sum of the values; histograms: the number of recordings; over the
    points whose attributes include `attributes`."""
    wanted = (attributes or {}).items()
    found = 0
    for point in metric_points(name):
        if all(point.attributes.get(key) == value for key, value in wanted):
            found += point.count if isinstance(point, HistogramDataPoint) else point.value
    return found


def rpc(service: str, method: str, code: int) -> dict:
    return {"rpc.service": service, "rpc.method": method, "rpc.grpc.status_code": code}


def click(response: gateway_pb2.SearchResponse, index: int, event_id: str | None = None) -> events_pb2.Interaction:
    result = response.results[index]
    return events_pb2.Interaction(
        event_id=event_id or uuid.uuid4().hex,
        type=events_pb2.INTERACTION_TYPE_CLICK,
        request_id=response.request_id,
        product_id=result.product.id,
        position=result.position,
    )


class Snapshot:
    """Totals of several (metric, attributes) pairs, to take differences."""

    def __init__(self, keys: dict[str, tuple[str, dict]]):
        self._keys = keys
        self.values = {label: total(name, attributes) for label, (name, attributes) in keys.items()}

    def __sub__(self, earlier: "Snapshot") -> dict[str, float]:
        return {label: self.values[label] - earlier.values[label] for label in self.values}


async def test_search_and_track_are_counted_on_every_server_and_in_events(gateway, system):
    composer = system.servers["gateway"].app
    await composer.wait_for_impressions()  # earlier tests' impressions must not land in between
    keys = {
        "search": ("rpc.server.requests", rpc(GATEWAY, "Search", OK)),
        "search_timed": ("rpc.server.duration", rpc(GATEWAY, "Search", OK)),
        "track": ("rpc.server.requests", rpc(GATEWAY, "Track", OK)),
        "understand": ("rpc.server.requests", rpc("shelfwise.query_understanding.v1.QueryUnderstandingService", "Understand", OK)),
        "retrieve": ("rpc.server.requests", rpc("shelfwise.retrieval.v1.RetrievalService", "Retrieve", OK)),
        "rank": ("rpc.server.requests", rpc("shelfwise.ranking.v1.RankingService", "Rank", OK)),
        "log_events": ("rpc.server.requests", rpc("shelfwise.events.v1.EventsService", "LogEvents", OK)),
        **{stage: ("shelfwise.gateway.stage.duration", {"rpc": "search", "stage": stage}) for stage in STAGES},
        "impressions": ("shelfwise.events.ingested", {"kind": "impression", "duplicate": False}),
        "impression_duplicates": ("shelfwise.events.ingested", {"kind": "impression", "duplicate": True}),
        "clicks": ("shelfwise.events.ingested", {"kind": "interaction", "duplicate": False}),
        "click_duplicates": ("shelfwise.events.ingested", {"kind": "interaction", "duplicate": True}),
    }
    before = Snapshot(keys)

    response = await gateway.Search(gateway_pb2.SearchRequest(query="espresso beans", page_size=4))
    event = click(response, 1)
    await gateway.Track(gateway_pb2.TrackRequest(interactions=[event]))
    await gateway.Track(gateway_pb2.TrackRequest(interactions=[event]))  # the same event id: a duplicate
    await composer.wait_for_impressions()

    assert Snapshot(keys) - before == {
        "search": 1, "search_timed": 1, "track": 2,
        "understand": 1, "retrieve": 1, "rank": 1,
        "log_events": 3,  # the impression and the two Track calls
        "query_understanding": 1, "retrieval": 1, "ranking": 1,
        "impressions": 1, "impression_duplicates": 0, "clicks": 1, "click_duplicates": 1,
    }
    (search_point,) = [
        p for p in metric_points("rpc.server.duration") if p.attributes == {"rpc.system": "grpc", **rpc(GATEWAY, "Search", OK)}
    ]
    assert tuple(search_point.explicit_bounds) == DURATION_BUCKETS_MS
    (stage_point, *_) = [p for p in metric_points("shelfwise.gateway.stage.duration") if p.attributes["stage"] == "ranking"]
    assert tuple(stage_point.explicit_bounds) == DURATION_BUCKETS_MS


async def test_rejected_requests_are_counted_with_their_status(gateway, system):
    keys = {
        "search": ("rpc.server.requests", rpc(GATEWAY, "Search", INVALID_ARGUMENT)),
        "search_timed": ("rpc.server.duration", rpc(GATEWAY, "Search", INVALID_ARGUMENT)),
        "track": ("rpc.server.requests", rpc(GATEWAY, "Track", INVALID_ARGUMENT)),
        "log_events": ("rpc.server.requests", rpc("shelfwise.events.v1.EventsService", "LogEvents", INVALID_ARGUMENT)),
        "failed": ("shelfwise.events.failed", {"kind": "interaction", "status": "INVALID_ARGUMENT"}),
        "ingested": ("shelfwise.events.ingested", {"kind": "interaction"}),
    }
    before = Snapshot(keys)

    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await gateway.Search(gateway_pb2.SearchRequest(query="tea", page_size=0))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    response = await gateway.Search(gateway_pb2.SearchRequest(query="green tea", page_size=2))
    wrong = click(response, 0)
    wrong.position = 2  # not where that product was shown
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await gateway.Track(gateway_pb2.TrackRequest(interactions=[wrong]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    assert Snapshot(keys) - before == {
        "search": 1, "search_timed": 1, "track": 1, "log_events": 1, "failed": 1, "ingested": 0,
    }


async def test_health_checks_are_not_counted(system):
    before = total("rpc.server.requests", {"rpc.service": "grpc.health.v1.Health"})
    async with create_channel(system.address("gateway")) as channel:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert total("rpc.server.requests", {"rpc.service": "grpc.health.v1.Health"}) == before == 0


async def test_impressions_pending_rise_while_sending_and_fall_when_sent():
    """A composer whose events service answers only when the test says so."""
    from services.gateway.composer import Composer
    from services.gateway.config import StageDeadlines
    from services.gateway.request_context import Budget, RequestContext
    from services.gateway.stages import Page

    class HeldEvents:
        events = SimpleNamespace(LogEvents="LogEvents")

        def __init__(self) -> None:
            self.release = asyncio.Event()

        async def call(self, stage, method, request, timeout):
            await self.release.wait()
            return events_pb2.LogEventsResponse(accepted=1)

    downstream = HeldEvents()
    composer = Composer(downstream, StageDeadlines(1.0, 1.0, 1.0, 1.0), candidates=10)
    page = Page(
        results=[gateway_pb2.SearchResult(product=common_pb2.Product(id="p-1"), position=1)],
        total=1, next_token="", model_version="test",
    )
    before = total("shelfwise.gateway.impressions_pending")
    context = RequestContext("r-pending", user_id="", session_id="", budget=Budget(None))
    composer.impressions.log(context, events_pb2.SURFACE_SEARCH, "x", page, 0)
    assert total("shelfwise.gateway.impressions_pending") == before + 1
    downstream.release.set()
    await composer.wait_for_impressions()
    await asyncio.sleep(0)
    assert total("shelfwise.gateway.impressions_pending") == before


async def test_upserts_deletes_and_index_size_are_measured(system):
    product = common_pb2.Product(
        id=f"test-metrics-{uuid.uuid4().hex[:8]}", title="Metric Test Tin of Smoked Paprika",
        description="For counting.", brand="Spicecraft", category="Pantry", price=4.0, currency="USD",
    )
    keys = {
        "inserted": ("shelfwise.retrieval.upserted", {"outcome": "inserted"}),
        "updated": ("shelfwise.retrieval.upserted", {"outcome": "updated"}),
        "deleted": ("shelfwise.retrieval.deleted", {}),
    }
    before = Snapshot(keys)
    async with create_channel(system.address("retrieval")) as channel:
        retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        await retrieval.UpsertProducts(retrieval_pb2.UpsertProductsRequest(products=[product]))
        await retrieval.UpsertProducts(retrieval_pb2.UpsertProductsRequest(products=[product]))
        size_with_it = total("shelfwise.retrieval.products")
        await retrieval.DeleteProducts(retrieval_pb2.DeleteProductsRequest(product_ids=[product.id]))
    assert Snapshot(keys) - before == {"inserted": 1, "updated": 1, "deleted": 1}
    assert size_with_it >= 352  # the demo catalogue and this product
    assert total("shelfwise.retrieval.products") == size_with_it - 1


async def test_triton_attempts_are_timed_by_outcome_and_retries_counted(triton_server, model_repository):
    from services.common.text_encoder import DEFAULT_MODEL_NAME as MODEL_NAME, TextEncoder
    from services.common.triton import TritonInference

    keys = {
        "ok": ("shelfwise.triton.request.duration", {"model": MODEL_NAME, "outcome": "ok"}),
        "retry": ("shelfwise.triton.request.duration", {"model": MODEL_NAME, "outcome": "retry"}),
        "unavailable": ("shelfwise.triton.request.duration", {"model": MODEL_NAME, "outcome": "unavailable"}),
        "retries": ("shelfwise.triton.retries", {"model": MODEL_NAME}),
    }
    before = Snapshot(keys)
    served = TritonInference(triton_server.grpc_url, model_repository, timeout_seconds=30)
    try:
        await TextEncoder(served, model_name=MODEL_NAME).encode(["red wine"], kind="query")
    finally:
        await served.close()
    # Nothing listens on port 1: refused connections are transient, retried twice, then given up.
    unreachable = TritonInference("127.0.0.1:1", model_repository, timeout_seconds=30, retries=2)
    try:
        with pytest.raises(Unavailable):
            await TextEncoder(unreachable, model_name=MODEL_NAME).encode(["red wine"], kind="query")
    finally:
        await unreachable.close()
    assert Snapshot(keys) - before == {"ok": 1, "retry": 2, "unavailable": 1, "retries": 2}

"""What every service promises: health, reflection, one trace per Search, clear errors for bad
input, degradation instead of failure, graceful shutdown."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2

from services.common.channels import create_channel
from tests.support.telemetry import metric_points

SERVICES = ("gateway", "query_understanding", "retrieval", "ranking", "events")


@pytest.mark.parametrize("service", SERVICES)
async def test_every_service_reports_serving(system, service):
    # The gateway's health follows retrieval's, probed every 2 s: a test before this one that
    # kept the shared event loop busy (the e5 conversion) can leave it NOT_SERVING until the
    # next probe, so wait for the state for a while instead of reading it once.
    async with create_channel(system.address(service)) as channel:
        for _ in range(40):
            response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                break
            await asyncio.sleep(0.25)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


async def test_generic_client_calls_search_through_reflection_only(system):
    """No project stubs: the request type and method come from server reflection."""
    address = system.address("gateway")

    def call() -> dict:
        with grpc.insecure_channel(address) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            assert "shelfwise.gateway.v1.GatewayService" in database.get_services()
            pool = descriptor_pool.DescriptorPool(database)
            method = pool.FindServiceByName("shelfwise.gateway.v1.GatewayService").FindMethodByName("Search")
            request_class = message_factory.GetMessageClass(method.input_type)
            response_class = message_factory.GetMessageClass(method.output_type)
            request = json_format.ParseDict({"query": "red wine", "pageSize": 3}, request_class())
            rpc = channel.unary_unary(
                "/shelfwise.gateway.v1.GatewayService/Search",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=response_class.FromString,
            )
            return json_format.MessageToDict(rpc(request, timeout=30))

    response = await asyncio.to_thread(call)
    assert len(response["results"]) == 3
    assert response["results"][0]["product"]["title"]


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
async def test_reflection_answers_under_v1_and_v1alpha(system, version):
    """grpcurl 1.9+ and Postman ask v1 first: a raw call, no reflection stub, lists the services."""
    async with create_channel(system.address("gateway")) as channel:
        info = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        answers = [a async for a in info(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)]
    names = {service.name for service in answers[0].list_services_response.service}
    assert {
        "shelfwise.gateway.v1.GatewayService", "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection",
    } <= names


async def test_one_search_is_one_trace_across_all_services(gateway, system, span_exporter):
    span_exporter.clear()
    response = await gateway.Search(gateway_pb2.SearchRequest(query="sparkling wine", page_size=3))
    await system.servers["gateway"].app.wait_for_impressions()
    spans = span_exporter.get_finished_spans()
    root = next(s for s in spans if s.name == "/shelfwise.gateway.v1.GatewayService/Search" and s.parent is None)
    in_trace = {s.name for s in spans if s.context.trace_id == root.context.trace_id}
    for method in (
        "/shelfwise.query_understanding.v1.QueryUnderstandingService/Understand",
        "/shelfwise.retrieval.v1.RetrievalService/Retrieve",
        "/shelfwise.ranking.v1.RankingService/Rank",
    ):
        kinds = {s.kind.name for s in spans if s.name == method and s.context.trace_id == root.context.trace_id}
        assert kinds == {"CLIENT", "SERVER"}, (method, in_trace)
    assert {"retrieval.lexical", "retrieval.dense"} <= in_trace
    # The impression goes in a batch, under a span of its own linked to the search.
    batch = next(
        s for s in spans
        if s.name == "gateway.log_impressions" and any(link.context.trace_id == root.context.trace_id for link in s.links)
    )
    assert batch.parent is None and batch.attributes["batch_size"] >= 1
    in_batch = [s for s in spans if s.context.trace_id == batch.context.trace_id]
    kinds = {s.kind.name for s in in_batch if s.name == "/shelfwise.events.v1.EventsService/LogEvents"}
    assert kinds == {"CLIENT", "SERVER"}, {s.name for s in in_batch}
    assert "/shelfwise.events.v1.EventsService/LogEvents" not in in_trace
    database_spans = [s for s in in_batch if s.attributes.get("db.system") == "postgresql"]
    assert database_spans, {s.name for s in in_batch}  # the impression's INSERT, under events' LogEvents
    assert response.request_id


LONG_QUERY = "x" * 100_000  # far above 512 characters, within the gateway's 1 MiB message limit


@pytest.mark.parametrize(
    ("request_kwargs", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "   \t "}, "query"),
        ({"query": LONG_QUERY}, "query"),
        ({"query": "wine", "page_size": 0}, "page_size"),
        ({"query": "wine", "page_size": 10_000}, "page_size"),
        ({"query": "wine", "filters": common_pb2.Filters(price=common_pb2.PriceRange(min=-5))}, "filters.price.min"),
        ({"query": "wine", "filters": common_pb2.Filters(price=common_pb2.PriceRange(max=-1))}, "filters.price.max"),
        ({"query": "wine", "filters": common_pb2.Filters(price=common_pb2.PriceRange(max=float("nan")))}, "filters.price.max"),
        ({"query": "wine", "page_token": "not-a-token"}, "page_token"),
    ],
)
async def test_bad_search_input_is_invalid_argument_naming_the_field(gateway, request_kwargs, field):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await gateway.Search(gateway_pb2.SearchRequest(**request_kwargs), timeout=30)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(field), raised.value.details()
    healthy = await gateway.Search(gateway_pb2.SearchRequest(query="wine", page_size=1), timeout=30)
    assert len(healthy.results) == 1


async def test_event_for_unknown_request_is_not_found(gateway):
    interaction = events_pb2.Interaction(
        event_id="e-unknown", type=events_pb2.INTERACTION_TYPE_CLICK, request_id="no-such-request",
        product_id="sku-redwine-0001", position=1,
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await gateway.Track(gateway_pb2.TrackRequest(interactions=[interaction]))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert "request_id" in raised.value.details() and "no-such-request" in raised.value.details()


@pytest.mark.parametrize(
    ("interaction", "field"),
    [
        (events_pb2.Interaction(type=events_pb2.INTERACTION_TYPE_CLICK, request_id="r", product_id="p", position=1), "interactions[0].event_id"),
        (events_pb2.Interaction(event_id="e", request_id="r", product_id="p", position=1), "interactions[0].type"),
        (events_pb2.Interaction(event_id="e", type=1, request_id="r", product_id="p", position=0), "interactions[0].position"),
        (events_pb2.Interaction(event_id="e", type=3, request_id="r", product_id="p", position=1, value=-3), "interactions[0].value"),
    ],
)
async def test_bad_events_are_invalid_argument_naming_the_field(gateway, interaction, field):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await gateway.Track(gateway_pb2.TrackRequest(interactions=[interaction]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details().startswith(field), raised.value.details()


async def test_recommend_needs_a_mode_and_its_seed(gateway):
    for request, field in (
        (gateway_pb2.RecommendRequest(), "mode"),
        (gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS), "product_id"),
        (gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY), "category"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await gateway.Recommend(request)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert raised.value.details().startswith(field)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await gateway.Recommend(
            gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS, product_id="no-such-product")
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_search_degrades_when_query_understanding_and_ranking_are_down(system):
    """A second gateway whose query understanding and ranking addresses point at nothing."""
    from services.gateway.config import GatewaySettings
    from services.gateway.server import create_server
    from shelfwise.gateway.v1 import gateway_pb2_grpc

    environ = dict(system.environ)
    environ["SHELFWISE_QUERY_UNDERSTANDING_ADDRESS"] = "127.0.0.1:1"
    environ["SHELFWISE_RANKING_ADDRESS"] = "127.0.0.1:1"
    running = await create_server(GatewaySettings.from_env(environ), port=0)
    try:
        async with create_channel(f"127.0.0.1:{running.port}") as channel:
            response = await gateway_pb2_grpc.GatewayServiceStub(channel).Search(
                gateway_pb2.SearchRequest(query="red wine", page_size=3), timeout=30
            )
        assert set(response.degraded_stages) == {"query_understanding", "ranking"}
        assert len(response.results) == 3
        assert "ranker=retrieval-order" in response.model_version
        counted = {p.attributes["stage"]: p.value for p in metric_points("shelfwise.gateway.degraded_responses")}
        assert counted.get("query_understanding", 0) >= 1 and counted.get("ranking", 0) >= 1
    finally:
        await running.stop()


async def test_search_is_unavailable_with_a_clear_message_when_retrieval_is_down(system):
    from services.gateway.config import GatewaySettings
    from services.gateway.server import create_server
    from shelfwise.gateway.v1 import gateway_pb2_grpc

    environ = dict(system.environ)
    environ["SHELFWISE_RETRIEVAL_ADDRESS"] = "127.0.0.1:1"
    running = await create_server(GatewaySettings.from_env(environ), port=0)
    try:
        async with create_channel(f"127.0.0.1:{running.port}") as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await gateway_pb2_grpc.GatewayServiceStub(channel).Search(
                    gateway_pb2.SearchRequest(query="red wine"), timeout=30
                )
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert raised.value.details().startswith("retrieval")
        async with create_channel(f"127.0.0.1:{running.port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        async with create_channel(f"127.0.0.1:{running.port}") as channel:
            alive = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="liveness"), timeout=5
            )
        assert alive.status == health_pb2.HealthCheckResponse.SERVING  # not ready, but alive: no restart
    finally:
        await running.stop()

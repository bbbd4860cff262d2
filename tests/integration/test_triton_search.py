"""Search with models served by a real Triton: the same answers as the embedded runtime, one
trace holding every service, Triton and PostgreSQL, the stated degradation while Triton is
down, and recovery when it returns."""

from __future__ import annotations

import asyncio
import uuid

from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.common.channels import create_channel
from services.common.inference import find_model
from services.gateway.config import GatewaySettings
from services.gateway.server import create_server as create_gateway
from services.ranking.config import RankingSettings
from services.ranking.server import create_server as create_ranking
from services.retrieval.config import RetrievalSettings
from services.retrieval.server import create_server as create_retrieval

QUERIES = ("something to drink with steak", "red runing shoes under $50", "noise cancelling headphones")


async def search(address: str, query: str) -> gateway_pb2.SearchResponse:
    async with create_channel(address) as channel:
        return await gateway_pb2_grpc.GatewayServiceStub(channel).Search(
            gateway_pb2.SearchRequest(query=query, page_size=5), timeout=30
        )


async def test_triton_serves_search_like_embedded_then_degrades_and_recovers(
    system, triton_server, model_repository, span_exporter
):
    has_ctr_head = find_model(model_repository, "ctr_head") is not None
    has_relevance_ranker = find_model(model_repository, "relevance_ranker") is not None
    environ = dict(system.environ)
    environ.update({
        "SHELFWISE_INFERENCE": "triton",
        "SHELFWISE_TRITON_URL": triton_server.grpc_url,
        "SHELFWISE_TRITON_TIMEOUT_SECONDS": "5",
    })
    retrieval = await create_retrieval(RetrievalSettings.from_env(environ), port=0)
    environ["SHELFWISE_RETRIEVAL_ADDRESS"] = f"127.0.0.1:{retrieval.port}"
    ranking = await create_ranking(RankingSettings.from_env(environ), port=0)
    environ["SHELFWISE_RANKING_ADDRESS"] = f"127.0.0.1:{ranking.port}"
    gateway = await create_gateway(GatewaySettings.from_env(environ), port=0)
    address = f"127.0.0.1:{gateway.port}"
    try:
        for query in QUERIES:
            via_triton = await search(address, query)
            embedded = await search(system.address("gateway"), query)
            assert not via_triton.degraded_stages
            assert [r.product.id for r in via_triton.results] == [r.product.id for r in embedded.results], query
            assert via_triton.model_version == embedded.model_version
        span_exporter.clear()
        await search(address, QUERIES[0])
        await gateway.app.wait_for_impressions()
        spans = span_exporter.get_finished_spans()
        (root,) = [s for s in spans if s.name == "/shelfwise.gateway.v1.GatewayService/Search" and s.kind.name == "SERVER"]
        trace = [s for s in spans if s.context.trace_id == root.context.trace_id]
        names = {s.name for s in trace}
        for method in ("QueryUnderstandingService/Understand", "RetrievalService/Retrieve", "RankingService/Rank",
                       "GRPCInferenceService/ModelInfer"):
            assert any(n.endswith(method) for n in names), (method, names)
        # The impression goes in a batch: its own trace, linked to the search.
        (batch,) = [s for s in spans if s.name == "gateway.log_impressions"
                    and any(link.context.trace_id == root.context.trace_id for link in s.links)]
        in_batch = [s for s in spans if s.context.trace_id == batch.context.trace_id]
        assert any(s.name.endswith("EventsService/LogEvents") for s in in_batch), {s.name for s in in_batch}
        assert any(s.attributes.get("db.system") == "postgresql" for s in in_batch), {s.name for s in in_batch}
        # The stages run one after another inside the gateway's span.
        stages = [
            s for s in trace if s.kind.name == "CLIENT" and s.parent is not None and s.parent.span_id == root.context.span_id
            and not s.name.endswith("LogEvents")
        ]
        assert len(stages) == 3, [s.name for s in stages]
        assert sum(s.end_time - s.start_time for s in stages) <= root.end_time - root.start_time

        await asyncio.to_thread(triton_server.stop)
        # Queries not searched before: retrieval caches query vectors, and a cached one needs
        # no Triton (the degradation would not show).
        down = await search(address, f"{QUERIES[1]} {uuid.uuid4().hex[:8]}")
        expected = (
            {"retrieval.dense", "retrieval.dense.multilingual"}
            | ({"ranking.relevance_ranker"} if has_relevance_ranker else set())
            | ({"ranking.ctr_head"} if has_ctr_head else set())
        )
        assert set(down.degraded_stages) == expected
        assert down.results and all(r.product.price <= 50 for r in down.results)

        await asyncio.to_thread(triton_server.start)
        for _ in range(60):  # clients reconnect with backoff
            recovered = await search(address, f"{QUERIES[1]} {uuid.uuid4().hex[:8]}")
            if not recovered.degraded_stages:
                break
            await asyncio.sleep(0.5)
        assert not recovered.degraded_stages
    finally:
        if not triton_server.running:
            await asyncio.to_thread(triton_server.start)
        for server in (gateway, ranking, retrieval):
            await server.stop()

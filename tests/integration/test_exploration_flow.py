"""Off-policy evaluation's inputs through the real stack: a gateway that explores logs each
explored page's propensities and pool with its impression in PostgreSQL, later pages of an
explored search neither repeat nor lose a product, `shelfwise eval offpolicy`'s reader turns
the log and its clicks back into what the estimator needs, and popularity frozen on a window
ignores every event after it (the learned state of an experiment's test period)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2, events_pb2_grpc
from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shelfwise.ranking.v1 import ranking_pb2, ranking_pb2_grpc
from shelfwise.retrieval.v1 import retrieval_pb2

from services.common.channels import create_channel
from services.gateway.exploration import placement_probabilities
from tests.support.eventually import eventually

QUERY = "red wine"


@pytest.fixture(scope="module")
async def exploring_gateway(system):
    from services.gateway.config import GatewaySettings
    from services.gateway.server import create_server

    environ = dict(system.environ, SHELFWISE_EXPLORATION_SHARE="1", SHELFWISE_EXPLORATION_TEMPERATURE="3",
                   SHELFWISE_EXPLORATION_DEPTH="20")
    server = await create_server(GatewaySettings.from_env(environ), port=0)
    channel = create_channel(f"127.0.0.1:{server.port}")
    yield gateway_pb2_grpc.GatewayServiceStub(channel), server
    await channel.close()
    await server.stop(grace=1.0)


async def test_an_explored_page_logs_its_propensities_and_pool_and_later_pages_skip_what_it_showed(
    exploring_gateway, gateway, database
):
    stub, server = exploring_gateway
    ranked = await gateway.Search(gateway_pb2.SearchRequest(query=QUERY, page_size=25))
    ranked_ids = [r.product.id for r in ranked.results]
    assert len(ranked_ids) == 25

    first = await stub.Search(gateway_pb2.SearchRequest(query=QUERY, page_size=5))
    assert "exploration=plackett-luce(T=3,depth=20)" in first.model_version
    shown = [r.product.id for r in first.results]
    assert [r.position for r in first.results] == [1, 2, 3, 4, 5]
    assert set(shown) <= set(ranked_ids[:20])

    await server.app.wait_for_impressions()
    row = await database.fetchrow(
        "SELECT product_ids, propensities, exploration_pool FROM impressions WHERE request_id = $1", first.request_id
    )
    import json

    pool = json.loads(row["exploration_pool"])
    assert [entry[0] for entry in pool] == ranked_ids[:20]  # the ranked order the page was drawn from
    assert all("relevance_probability" in entry[1] or entry[1] for entry in pool)
    marginals = placement_probabilities(20, 5, 3.0)
    rank = {product: r for r, product in enumerate(ranked_ids[:20])}
    expected = [marginals[rank[product], position] for position, product in enumerate(shown)]
    assert list(row["product_ids"]) == shown
    assert np.allclose(row["propensities"], expected, rtol=1e-6)
    assert np.allclose([entry[2] for entry in pool], marginals.sum(axis=1), rtol=1e-6)

    # Later pages: the ranked order without the five shown, so four pages hold the whole pool.
    pages, token = [shown], first.next_page_token
    for number in range(2, 6):
        page = await stub.Search(gateway_pb2.SearchRequest(query=QUERY, page_size=5, page_token=token))
        assert [r.position for r in page.results] == list(range(5 * number - 4, 5 * number + 1))
        assert "exploration" not in page.model_version
        pages.append([r.product.id for r in page.results])
        token = page.next_page_token
    seen = [product for page in pages for product in page]
    assert len(seen) == len(set(seen)) == 25
    assert set(seen[:20]) == set(ranked_ids[:20]) and seen[20:] == ranked_ids[20:25]
    assert pages[1] == [p for p in ranked_ids[:20] if p not in shown][:5]  # in ranked order


async def test_the_offpolicy_reader_returns_the_explored_log_with_its_clicks(exploring_gateway, system):
    from training.experiments.offpolicy import TargetPolicy, estimate, read_explored

    stub, server = exploring_gateway
    since = datetime.now(timezone.utc)
    user = f"explorer-{uuid.uuid4().hex[:8]}"
    page = await stub.Search(gateway_pb2.SearchRequest(query="green tea", page_size=6, user_id=user))
    clicked = page.results[2]
    await stub.Track(gateway_pb2.TrackRequest(interactions=[events_pb2.Interaction(
        event_id=uuid.uuid4().hex, type=events_pb2.INTERACTION_TYPE_CLICK, request_id=page.request_id,
        product_id=clicked.product.id, position=clicked.position, user_id=user,
    )]))
    await server.app.wait_for_impressions()
    until = datetime.now(timezone.utc) + timedelta(seconds=1)
    explored = [s for s in await read_explored(system.environ["SHELFWISE_DATABASE_URL"], since, until)
                if page.results[0].product.id in s.shown]
    assert len(explored) == 1
    search = explored[0]
    assert search.shown == tuple(r.product.id for r in page.results)
    assert search.clicks == (0, 0, 1, 0, 0, 0) and search.purchases == (0,) * 6
    assert len(search.pool) == 20 and len(search.pool_features) == 20 and len(search.pool_shown) == 20
    result = estimate(TargetPolicy("control", frozenset()), explored, samples=20)
    assert result["searches"] == 1 and all(np.isfinite(result[f"ctr_{e}"]["value"]) for e in ("ips", "snips", "pbm"))


async def test_frozen_popularity_ignores_every_event_after_its_window(system):
    from services.ranking.config import RankingSettings
    from services.ranking.server import create_server

    before, after = f"frozen-{uuid.uuid4().hex[:6]}", f"later-{uuid.uuid4().hex[:6]}"
    now = datetime.now(timezone.utc)
    shown, clicks = [], []
    for product, when in ((before, now - timedelta(minutes=30)), (after, now + timedelta(seconds=1))):
        request_id = uuid.uuid4().hex
        impression = events_pb2.Impression(event_id=f"impression-{request_id}", request_id=request_id,
                                           surface=events_pb2.SURFACE_SEARCH, product_ids=[product])
        click = events_pb2.Interaction(event_id=uuid.uuid4().hex, type=events_pb2.INTERACTION_TYPE_CLICK,
                                       request_id=request_id, product_id=product, position=1)
        impression.occurred_at.FromDatetime(when)
        click.occurred_at.FromDatetime(when)
        shown.append(impression)
        clicks.append(click)
    window = (now - timedelta(hours=1), now)
    async with create_channel(system.address("events")) as channel:
        events = events_pb2_grpc.EventsServiceStub(channel)
        await events.LogEvents(events_pb2.LogEventsRequest(impressions=shown))
        await events.LogEvents(events_pb2.LogEventsRequest(interactions=clicks))
        request = events_pb2.ListPopularProductsRequest(limit=10_000)
        request.since.FromDatetime(window[0])
        request.until.FromDatetime(window[1])
        popular = {p.product_id for p in (await events.ListPopularProducts(request)).products}
        assert before in popular and after not in popular
        half = events_pb2.ListPopularProductsRequest()
        half.since.FromDatetime(window[0])
        with pytest.raises(Exception, match="give both since and until"):
            await events.ListPopularProducts(half)

    environ = dict(system.environ, SHELFWISE_POPULARITY_SINCE=window[0].isoformat(),
                   SHELFWISE_POPULARITY_UNTIL=window[1].isoformat(), SHELFWISE_POPULARITY_REFRESH_SECONDS="0.2")
    server = await create_server(RankingSettings.from_env(environ), port=0)
    candidates = [retrieval_pb2.Candidate(product=common_pb2.Product(id=p), lexical_score=1.0, fused_score=0.01)
                  for p in (after, before)]
    try:
        async with create_channel(f"127.0.0.1:{server.port}") as channel:
            ranking = ranking_pb2_grpc.RankingServiceStub(channel)

            async def popularity_of() -> dict[str, float]:
                ranked = await ranking.Rank(ranking_pb2.RankRequest(candidates=candidates, limit=2))
                return {i.product_id: next((r.value for r in i.reasons if r.feature == "popularity"), 0.0)
                        for i in ranked.items}

            async def loaded() -> bool:
                return (await popularity_of())[before] > 0.0

            await eventually(loaded, 15, "ranking loading the frozen popularity", interval=0.2)
            await asyncio.sleep(1.0)  # five refreshes later, after the later click is stored
            values = await popularity_of()
            assert values[before] > 0.0 and values[after] == 0.0
    finally:
        await server.stop(grace=1.0)

"""The events service as a log that a CTR head and experiments can rely on: the ranking
features and arms served with each impression, through the real servers and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest
from shelfwise.events.v1 import events_pb2, events_pb2_grpc
from shelfwise.gateway.v1 import gateway_pb2

from services.common.channels import create_channel


def impression(product_ids=("p1", "p2", "p3"), **fields) -> events_pb2.Impression:
    request_id = uuid.uuid4().hex
    return events_pb2.Impression(
        event_id=f"impression-{request_id}",
        request_id=request_id,
        surface=events_pb2.SURFACE_SEARCH,
        product_ids=list(product_ids),
        **fields,
    )


@pytest.fixture
async def events(system):
    async with create_channel(system.address("events")) as channel:
        yield events_pb2_grpc.EventsServiceStub(channel)


async def test_search_impression_stores_the_ranking_features_of_each_result(gateway, system, database):
    response = await gateway.Search(gateway_pb2.SearchRequest(query="espresso", page_size=5))
    await system.servers["gateway"].app.wait_for_impressions({response.request_id})
    row = await database.fetchrow(
        "SELECT product_ids, features, interleaving_arms, experiment_arm FROM impressions WHERE request_id = $1",
        response.request_id,
    )
    served = [{reason.feature: reason.value for reason in result.reasons} for result in response.results]
    assert any(served), "ranking gave no reasons to log"
    assert row["product_ids"] == [result.product.id for result in response.results]
    assert json.loads(row["features"]) == served
    assert (row["interleaving_arms"], row["experiment_arm"]) == ([], "")


async def test_logged_features_arms_and_experiment_arm_are_stored_aligned_with_products(events, database):
    event = impression(
        experiment_arm="ranker-b",
        features=[
            events_pb2.ProductFeatures(values={"bm25": 2.5, "dense_similarity": 0.75}),
            events_pb2.ProductFeatures(),
            events_pb2.ProductFeatures(values={"popularity": 1e-9}),
        ],
        interleaving_arms=["control", "treatment", "control"],
    )
    response = await events.LogEvents(events_pb2.LogEventsRequest(impressions=[event]))
    assert (response.accepted, response.duplicates) == (1, 0)
    row = await database.fetchrow(
        "SELECT features, interleaving_arms, experiment_arm FROM impressions WHERE event_id = $1", event.event_id
    )
    assert json.loads(row["features"]) == [{"bm25": 2.5, "dense_similarity": 0.75}, {}, {"popularity": 1e-9}]
    assert row["interleaving_arms"] == ["control", "treatment", "control"]
    assert row["experiment_arm"] == "ranker-b"


async def test_impression_without_features_or_arms_stores_empty_ones(events, database):
    event = impression()
    await events.LogEvents(events_pb2.LogEventsRequest(impressions=[event]))
    row = await database.fetchrow(
        "SELECT features, interleaving_arms FROM impressions WHERE event_id = $1", event.event_id
    )
    assert (json.loads(row["features"]), row["interleaving_arms"]) == ([], [])


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"features": [events_pb2.ProductFeatures(values={"bm25": 1.0})]}, "impressions[0].features"),
        ({"features": [events_pb2.ProductFeatures()] * 4}, "impressions[0].features"),
        (
            {"features": [events_pb2.ProductFeatures(), events_pb2.ProductFeatures(values={"bm25": float("nan")}),
                          events_pb2.ProductFeatures()]},
            "impressions[0].features[1].values['bm25']",
        ),
        ({"interleaving_arms": ["control", "treatment"]}, "impressions[0].interleaving_arms"),
        ({"interleaving_arms": ["control", "", "control"]}, "impressions[0].interleaving_arms[1]"),
    ],
)
async def test_features_or_arms_that_do_not_fit_the_products_are_invalid_argument_naming_the_field(
    events, database, fields, field
):
    event = impression(**fields)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await events.LogEvents(events_pb2.LogEventsRequest(impressions=[event]))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(field + ": ")
    assert await database.fetchval("SELECT count(*) FROM impressions WHERE event_id = $1", event.event_id) == 0

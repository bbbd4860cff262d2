"""Autocomplete end to end: the gateway's Suggest over real events, query understanding and
gateway servers (port 0) on a fresh PostgreSQL database. Completions come from catalogue titles,
brands and categories and from logged queries that led to a click, but only those at least k
distinct shoppers searched; typos and Chinese prefixes complete; bad requests are refused naming
the field; with query understanding down the gateway says UNAVAILABLE, naming it."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import asyncpg
import grpc
import pytest
from shelfwise.events.v1 import events_pb2, events_pb2_grpc
from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from shelfwise.query_understanding.v1 import query_understanding_pb2 as qu_pb2
from shelfwise.query_understanding.v1 import query_understanding_pb2_grpc as qu_pb2_grpc

from services.common.channels import create_channel
from services.local.in_process import create_service_server
from services.local.processes import free_ports
from tests.support.system import create_database, system_environment

MIN_USERS = 3
QUERY = qu_pb2.SUGGESTION_SOURCE_QUERY
PRODUCTS = [
    ("sw-1", "Apple MacBook Air 13", "Apple", "Laptops"),
    ("sw-2", "Apple MacBook Pro 14", "Apple", "Laptops"),
    ("sw-3", "Lenovo ThinkPad X1 Carbon", "Lenovo", "Laptops"),
    ("sw-4", "Trail running shoes", "Northpeak", "Running Shoes"),
    ("sw-5", "红茶 特级 100g", "茶园", "茶叶"),
]
PRODUCTS_SQL = """
INSERT INTO products (id, title, brand, category, price)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[])
"""


def searched(query: str, shoppers: list[tuple[str, str]], clicked: bool = True) -> tuple[list, list]:
    """Impressions of `query` by each (user id, session id), each with a click when `clicked`."""
    impressions, clicks = [], []
    for user_id, session_id in shoppers:
        request_id = uuid.uuid4().hex
        impressions.append(events_pb2.Impression(
            event_id=f"i-{request_id}", request_id=request_id, user_id=user_id, session_id=session_id,
            surface=events_pb2.SURFACE_SEARCH, query=query, product_ids=["sw-1", "sw-2"], first_position=1,
        ))
        if clicked:
            clicks.append(events_pb2.Interaction(
                event_id=f"c-{request_id}", type=events_pb2.INTERACTION_TYPE_CLICK, request_id=request_id,
                product_id="sw-2", position=2, user_id=user_id, session_id=session_id,
            ))
    return impressions, clicks


def users(*names: str) -> list[tuple[str, str]]:
    return [(name, "") for name in names]


QUERY_LOG = [
    searched("macbook sleeve", users("u1", "u2", "u3")),  # k shoppers: suggested
    searched("MacBook  Charger", [("", "s1"), ("", "s2"), ("", "s3"), ("", "s4")]),  # sessions count too
    searched("macbook for anna", users("u1", "u2")),  # fewer than k: never suggested
    searched("macbook stickers", users("u4") * 6),  # one shopper six times is one shopper
    searched("macbook stand", users("u1", "u2", "u3", "u4"), clicked=False),  # no click: not a signal
]


async def log_events(events_address: str, batches) -> None:
    async with create_channel(events_address) as channel:
        stub = events_pb2_grpc.EventsServiceStub(channel)
        for impressions, clicks in batches:
            await stub.LogEvents(events_pb2.LogEventsRequest(impressions=impressions), timeout=10)
            if clicks:
                await stub.LogEvents(events_pb2.LogEventsRequest(interactions=clicks), timeout=10)


@pytest.fixture(scope="module")
async def stack(postgres_url, model_repository):
    database_url = await create_database(postgres_url, f"suggest_{uuid.uuid4().hex[:10]}")
    closed_retrieval, closed_qu = (f"127.0.0.1:{port}" for port in free_ports(2))
    environ = system_environment(
        database_url, model_repository, SHELFWISE_SUGGEST_MIN_USERS=str(MIN_USERS),
        SHELFWISE_SUGGEST_QUERY_LOG_SECONDS="0.3", SHELFWISE_RETRIEVAL_ADDRESS=closed_retrieval,
        SHELFWISE_RANKING_ADDRESS=closed_retrieval, SHELFWISE_DEADLINE_SUGGEST_SECONDS="5",
    )
    servers = {"events": await create_service_server("events", environ)}  # applies the migrations
    environ["SHELFWISE_EVENTS_ADDRESS"] = f"127.0.0.1:{servers['events'].port}"
    connection = await asyncpg.connect(database_url)
    try:
        await connection.execute(PRODUCTS_SQL, *[list(column) for column in zip(*PRODUCTS)], [10.0] * len(PRODUCTS))
    finally:
        await connection.close()
    await log_events(environ["SHELFWISE_EVENTS_ADDRESS"], QUERY_LOG)
    servers["query_understanding"] = await create_service_server("query_understanding", environ)
    environ["SHELFWISE_QUERY_UNDERSTANDING_ADDRESS"] = f"127.0.0.1:{servers['query_understanding'].port}"
    servers["gateway"] = await create_service_server("gateway", environ)
    # A gateway whose query understanding is not there.
    servers["orphan"] = await create_service_server("gateway", {**environ, "SHELFWISE_QUERY_UNDERSTANDING_ADDRESS": closed_qu})
    channels = {name: create_channel(f"127.0.0.1:{servers[name].port}") for name in ("gateway", "orphan", "query_understanding")}
    yield {
        "gateway": gateway_pb2_grpc.GatewayServiceStub(channels["gateway"]),
        "orphan": gateway_pb2_grpc.GatewayServiceStub(channels["orphan"]),
        "query_understanding": qu_pb2_grpc.QueryUnderstandingServiceStub(channels["query_understanding"]),
        "events_address": environ["SHELFWISE_EVENTS_ADDRESS"],
    }
    for channel in channels.values():
        await channel.close()
    for name in ("orphan", "gateway", "query_understanding", "events"):
        await servers[name].stop(grace=0.5)


async def suggest(stub, prefix: str, limit: int = 10) -> list:
    response = await stub.Suggest(gateway_pb2.SuggestRequest(prefix=prefix, limit=limit), timeout=10)
    return list(response.suggestions)


async def test_catalogue_titles_brands_and_categories_complete_a_prefix(stack) -> None:
    found = {s.text: s.source for s in await suggest(stack["gateway"], "l")}
    assert found.get("Laptops") == qu_pb2.SUGGESTION_SOURCE_CATEGORY
    assert found.get("Lenovo") == qu_pb2.SUGGESTION_SOURCE_BRAND
    titles = {s.text for s in await suggest(stack["gateway"], "thinkp") if s.source == qu_pb2.SUGGESTION_SOURCE_TITLE}
    assert "thinkpad x1" in titles
    # A later word of a title completes too: "mac" in "apple macbook".
    assert "apple macbook" in {s.text for s in await suggest(stack["gateway"], "mac", 20)}


async def test_a_query_clicked_by_k_shoppers_is_suggested_and_one_by_fewer_is_not(stack) -> None:
    queries = [s.text for s in await suggest(stack["gateway"], "macbook ", 20) if s.source == QUERY]
    assert set(queries) == {"macbook sleeve", "macbook charger"}
    assert queries[0] == "macbook charger"  # four clicked searches before three
    for prefix in ("macbook f", "macbook st", "macbook sti"):  # not even as a typo of another
        assert {s.text for s in await suggest(stack["gateway"], prefix, 20) if s.source == QUERY} <= {
            "macbook sleeve", "macbook charger"}


async def test_a_query_reaching_k_shoppers_after_the_start_is_suggested_within_the_refresh(stack) -> None:
    await log_events(stack["events_address"], [searched("lenovo dock", users("u7", "u8", "u9"))])
    deadline = time.monotonic() + 15
    while "lenovo dock" not in [s.text for s in await suggest(stack["gateway"], "lenovo d")]:
        assert time.monotonic() < deadline, "'lenovo dock' was not suggested 15 s after three shoppers clicked"
        await asyncio.sleep(0.2)


async def test_a_typo_in_the_prefix_is_corrected_and_said_to_be(stack) -> None:
    found = await suggest(stack["gateway"], "lenvo")
    assert found and all(s.corrected for s in found)
    assert "Lenovo" in [s.text for s in found]


async def test_a_chinese_prefix_completes_chinese_catalogue_text(stack) -> None:
    found = [s.text for s in await suggest(stack["gateway"], "红")]
    assert "红茶" in found and "红茶 特级" in found
    assert "茶叶" in [s.text for s in await suggest(stack["gateway"], "茶")]


@pytest.mark.parametrize("fields, message", [
    ({"prefix": ""}, "prefix: is required"),
    ({"prefix": " \t "}, "prefix: is required"),
    ({"prefix": "m" * 101}, "prefix: must be at most 100 characters"),
    ({"prefix": "mac", "limit": 0}, "limit: must be between 1 and 20"),
    ({"prefix": "mac", "limit": 21}, "limit: must be between 1 and 20"),
])
async def test_bad_requests_are_invalid_argument_naming_the_field(stack, fields, message) -> None:
    for stub, request in ((stack["gateway"], gateway_pb2.SuggestRequest(**fields)),
                          (stack["query_understanding"], qu_pb2.SuggestRequest(**fields))):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.Suggest(request, timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert refused.value.details().startswith(message), refused.value.details()


async def test_without_query_understanding_suggest_is_unavailable_naming_it(stack) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await stack["orphan"].Suggest(gateway_pb2.SuggestRequest(prefix="mac"), timeout=10)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    assert failed.value.details().startswith("query_understanding"), failed.value.details()


async def test_the_response_names_the_index_it_came_from(stack) -> None:
    response = await stack["gateway"].Suggest(gateway_pb2.SuggestRequest(prefix="mac", request_id="r-1"), timeout=10)
    assert response.request_id == "r-1"
    assert response.index_version.startswith(f"{len(PRODUCTS)}@") and ";queries=" in response.index_version
    assert json.dumps(response.index_version)  # printable, one line

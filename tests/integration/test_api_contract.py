"""The API contract a new user meets through the five real servers on the demo catalogue: facet
values matched ignoring case and spaces (unknown ones named with close known values), page
tokens bound to their request, unknown history ids reported, fallback results labelled, one
wording for required fields and enum values."""

from __future__ import annotations

import uuid

import grpc
import pytest
from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2

from tests.support.eventually import eventually


async def rejected(call, request) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(request)
    return error.value


async def test_facet_values_match_ignoring_case_and_spaces(gateway):
    for spelling in ("coffee", "  COFFEE ", "Coffee"):
        response = await gateway.Search(gateway_pb2.SearchRequest(
            query="beans", page_size=5, filters=common_pb2.Filters(categories=[spelling])
        ))
        assert response.results and {r.product.category for r in response.results} == {"Coffee"}, spelling
    wine = await gateway.Search(gateway_pb2.SearchRequest(
        query="wine", page_size=5, filters=common_pb2.Filters(categories=["red   WINE"], attributes={" Color ": "RED"})
    ))
    assert wine.results and {r.product.category for r in wine.results} == {"Red Wine"}
    popular = await gateway.Recommend(gateway_pb2.RecommendRequest(
        mode=gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY, category="tea", page_size=4
    ))
    assert len(popular.results) == 4 and {r.product.category for r in popular.results} == {"Tea"}


async def test_an_unknown_facet_value_names_the_field_and_close_known_values(gateway):
    error = await rejected(gateway.Search, gateway_pb2.SearchRequest(
        query="beans", filters=common_pb2.Filters(categories=["Coffee", "cofee"])
    ))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("filters.categories[1]: no product has category 'cofee'"), error.details()
    assert "'Coffee'" in error.details()
    error = await rejected(gateway.Search, gateway_pb2.SearchRequest(
        query="wine", filters=common_pb2.Filters(attributes={"color": "redd"})
    ))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("filters.attributes['color']: no product has color 'redd'"), error.details()
    assert "'red'" in error.details()
    error = await rejected(gateway.Recommend, gateway_pb2.RecommendRequest(
        mode=gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY, category="teaa"
    ))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("category: no product has category 'teaa'"), error.details()
    assert "'Tea'" in error.details()


async def test_a_page_token_only_continues_the_request_that_made_it(gateway):
    first = await gateway.Search(gateway_pb2.SearchRequest(query="red wine", page_size=5))
    token = first.next_page_token
    assert token
    same = await gateway.Search(gateway_pb2.SearchRequest(query="  Red WINE", page_size=5, page_token=token))
    assert [r.position for r in same.results] == list(range(6, 6 + len(same.results)))
    for request in (
        gateway_pb2.SearchRequest(query="white wine", page_size=5, page_token=token),
        gateway_pb2.SearchRequest(query="red wine", page_size=5, page_token=token,
                                  filters=common_pb2.Filters(categories=["Red Wine"])),
    ):
        error = await rejected(gateway.Search, request)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details() == "page_token: was issued for another query or filters; start again without it"
    error = await rejected(gateway.Recommend, gateway_pb2.RecommendRequest(
        mode=gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY, category="Red Wine", page_token=token
    ))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("page_token: was issued")


async def popularity(system) -> dict[str, float]:
    from shelfwise.events.v1 import events_pb2, events_pb2_grpc

    from services.common.channels import create_channel

    async with create_channel(system.address("events")) as channel:
        popular = await events_pb2_grpc.EventsServiceStub(channel).ListPopularProducts(
            events_pb2.ListPopularProductsRequest(limit=10_000)
        )
    return {p.product_id: p.score for p in popular.products}


async def recommend_in_step(gateway, system, request, expected: set[str] = frozenset()):
    """(response, events' scores now) once the gateway's popularity, which it reads from events in
    the background (every 0.3 s in tests), has caught up: every result scored as events scores it
    now, and the `expected` products among the results."""
    seen = {}

    async def caught_up() -> bool:
        seen["response"] = response = await gateway.Recommend(request)
        seen["scores"] = scores = await popularity(system)
        shown = {r.product.id for r in response.results}
        return expected <= shown and all(r.score == scores.get(r.product.id, 0.0) for r in response.results)

    await eventually(caught_up, 10, "the gateway's popularity catching up with events")
    return seen["response"], seen["scores"]


async def test_popular_results_carry_their_engagement_score_and_are_ordered_by_it(gateway, system):
    from tests.support.shoppers import interact

    user = f"popular-{uuid.uuid4().hex}"
    bought = await interact(gateway, user, "green tea", "Tea", 2, kind=events_pb2.INTERACTION_TYPE_PURCHASE)
    response, scores = await recommend_in_step(gateway, system, gateway_pb2.RecommendRequest(
        mode=gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY, category="Tea", page_size=10
    ), expected=set(bought))
    assert set(bought) <= {r.product.id for r in response.results[:len(scores)]}
    for result in response.results:
        assert [(r.feature, r.value) for r in result.reasons] == [("popular", result.score)]
        assert result.score == scores.get(result.product.id, 0.0)
    assert [r.score for r in response.results] == sorted((r.score for r in response.results), reverse=True)
    assert response.results[0].score >= 10  # a purchase counts 10
    stages = [t.stage for t in response.timings]
    assert "ranking" not in stages and len(stages) == len(set(stages)), stages


async def test_cold_start_results_are_labelled_cold_start(gateway, system):
    response, scores = await recommend_in_step(gateway, system, gateway_pb2.RecommendRequest(
        mode=gateway_pb2.RECOMMEND_MODE_FOR_USER, user_id=f"new-{uuid.uuid4().hex}", page_size=6
    ))
    assert len(response.results) == 6
    for result in response.results:
        assert [(r.feature, r.value) for r in result.reasons] == [("cold_start", result.score)]
        assert result.score == scores.get(result.product.id, 0.0)
    assert [r.score for r in response.results] == sorted((r.score for r in response.results), reverse=True)
    stages = [t.stage for t in response.timings]
    assert len(stages) == len(set(stages)), stages


def interaction(**fields) -> events_pb2.Interaction:
    base = dict(event_id=uuid.uuid4().hex, type=events_pb2.INTERACTION_TYPE_CLICK, request_id="r-1",
                product_id="sku-coffee-0001", position=1)
    base.update(fields)
    return events_pb2.Interaction(**base)


MODES = "RECOMMEND_MODE_SIMILAR_ITEMS, RECOMMEND_MODE_POPULAR_IN_CATEGORY, RECOMMEND_MODE_FOR_USER, RECOMMEND_MODE_COMPLETE_CART"
TYPES = "INTERACTION_TYPE_CLICK, INTERACTION_TYPE_ADD_TO_CART, INTERACTION_TYPE_PURCHASE"


@pytest.mark.parametrize("method, request_, details", [
    ("Search", gateway_pb2.SearchRequest(query="  "), "query: is required"),
    ("Recommend", gateway_pb2.RecommendRequest(), "mode: is required"),
    ("Recommend", gateway_pb2.RecommendRequest(mode=9), f"mode: must be one of {MODES}, got 9"),
    ("Recommend", gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS), "product_id: is required"),
    ("Recommend", gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY), "category: is required"),
    ("Recommend", gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_COMPLETE_CART), "cart_product_ids: is required"),
    ("Track", gateway_pb2.TrackRequest(), "interactions: is required"),
    ("Track", gateway_pb2.TrackRequest(interactions=[interaction(event_id="")]), "interactions[0].event_id: is required"),
    ("Track", gateway_pb2.TrackRequest(interactions=[interaction(type=0)]), "interactions[0].type: is required"),
    ("Track", gateway_pb2.TrackRequest(interactions=[interaction(type=7)]), f"interactions[0].type: must be one of {TYPES}"),
    ("Track", gateway_pb2.TrackRequest(interactions=[interaction(position=0)]), "interactions[0].position: is required"),
])
async def test_required_fields_and_enum_values_have_one_wording(gateway, method, request_, details):
    error = await rejected(getattr(gateway, method), request_)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == details


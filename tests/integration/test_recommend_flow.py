"""Personal recommendations through the five real servers on the demo catalogue, with no
sequence model deployed (the shopper vector then comes from the history's text embeddings):
the FOR_USER and COMPLETE_CART modes, cold start, freshness and personal search ranking."""

from __future__ import annotations

import uuid
from collections import Counter

import grpc
import pytest
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2

from tests.support.shoppers import interact

COFFEE = ["sku-coffee-0001", "sku-coffee-0002", "sku-coffee-0003"]


def categories(response) -> Counter:
    return Counter(r.product.category for r in response.results)


async def for_user(gateway, **fields) -> gateway_pb2.RecommendResponse:
    return await gateway.Recommend(
        gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_FOR_USER, page_size=fields.pop("page_size", 5), **fields)
    )


async def test_for_user_with_a_supplied_coffee_history_recommends_coffee_but_not_the_history(gateway):
    response = await for_user(gateway, history_product_ids=COFFEE)
    ids = {r.product.id for r in response.results}
    assert not ids & set(COFFEE)
    assert categories(response)["Coffee"] >= 3, categories(response)
    assert "personal=text-history" in response.model_version
    assert all(any(reason.feature == "personal_affinity" and reason.value > 0 for reason in r.reasons) for r in response.results)


async def test_complete_cart_never_returns_the_cart_and_stays_near_it(gateway):
    cart = ["sku-redwine-0001", "sku-redwine-0002"]
    response = await gateway.Recommend(
        gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_COMPLETE_CART, cart_product_ids=cart, page_size=8)
    )
    assert len(response.results) == 8
    assert not {r.product.id for r in response.results} & set(cart)
    wine = sum(categories(response)[c] for c in ("Red Wine", "White Wine", "Sparkling Wine"))
    assert wine >= 4, categories(response)


async def test_complete_cart_without_a_cart_names_the_field(gateway):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await gateway.Recommend(gateway_pb2.RecommendRequest(mode=gateway_pb2.RECOMMEND_MODE_COMPLETE_CART))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cart_product_ids" in error.value.details()


async def test_bad_history_ids_are_invalid_argument_naming_the_entry(gateway):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await for_user(gateway, history_product_ids=["sku-coffee-0001", ""])
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "history_product_ids[1]" in error.value.details()


async def test_cold_start_user_without_history_gets_popular_products_in_the_category(gateway):
    response = await for_user(gateway, user_id=f"new-{uuid.uuid4().hex}", category="Tea", page_size=4)
    assert len(response.results) == 4
    assert set(categories(response)) == {"Tea"}
    assert "personal=" not in response.model_version


async def test_a_history_of_only_unknown_products_is_not_found(gateway):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await for_user(gateway, history_product_ids=["sku-nope-1"], page_size=6)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert error.value.details() == "history_product_ids: no product sku-nope-1 in the catalogue"


async def test_unknown_history_ids_are_reported_and_the_known_ones_used(gateway):
    response = await for_user(gateway, history_product_ids=["sku-nope-1", *COFFEE, "sku-nope-2"])
    assert list(response.unknown_product_ids) == ["sku-nope-1", "sku-nope-2"]
    assert "personal=text-history" in response.model_version
    assert categories(response)["Coffee"] >= 3, categories(response)
    stages = [t.stage for t in response.timings]
    assert len(stages) == len(set(stages)), stages


async def test_session_so_far_personalises_an_anonymous_shopper(gateway):
    session = f"session-{uuid.uuid4().hex}"
    search = await gateway.Search(gateway_pb2.SearchRequest(query="hiking boots", session_id=session, page_size=10))
    boots = [r for r in search.results if r.product.category == "Hiking Boots"][:2]
    await gateway.Track(
        gateway_pb2.TrackRequest(
            interactions=[
                events_pb2.Interaction(
                    event_id=uuid.uuid4().hex, type=events_pb2.INTERACTION_TYPE_CLICK, request_id=search.request_id,
                    product_id=r.product.id, position=r.position, session_id=session,
                )
                for r in boots
            ]
        )
    )
    response = await for_user(gateway, session_id=session, page_size=5)
    assert "personal=text-history" in response.model_version
    outdoor = sum(categories(response)[c] for c in ("Hiking Boots", "Camping Gear", "Running Shoes", "Sneakers"))
    assert outdoor >= 3, categories(response)


async def test_a_tracked_purchase_changes_the_next_for_user_response_without_a_retrain(gateway):
    user = f"fresh-{uuid.uuid4().hex}"
    await interact(gateway, user, "running shoes", "Running Shoes", 2)
    before = await for_user(gateway, user_id=user)
    assert categories(before)["Tea"] == 0, categories(before)
    await interact(gateway, user, "green tea", "Tea", 3, kind=events_pb2.INTERACTION_TYPE_PURCHASE)
    after = await for_user(gateway, user_id=user)
    assert categories(after)["Tea"] >= 3, categories(after)


async def test_search_ranking_uses_the_shoppers_affinity(gateway):
    user = f"tea-lover-{uuid.uuid4().hex}"
    await interact(gateway, user, "green tea", "Tea", 3, kind=events_pb2.INTERACTION_TYPE_PURCHASE)
    personal = await gateway.Search(gateway_pb2.SearchRequest(query="something warm to drink", user_id=user, page_size=30))
    anonymous = await gateway.Search(gateway_pb2.SearchRequest(query="something warm to drink", page_size=30))
    assert "personal=text-history" in personal.model_version

    def affinity(result) -> float:
        return next((reason.value for reason in result.reasons if reason.feature == "personal_affinity"), 0.0)

    tea = [affinity(r) for r in personal.results if r.product.category == "Tea"]
    other = [affinity(r) for r in personal.results if r.product.category != "Tea"]
    assert tea and sum(tea) / len(tea) > sum(other) / len(other)
    assert all(affinity(r) == 0 for r in anonymous.results)

    def first_tea(response) -> int:
        return min((r.position for r in response.results if r.product.category == "Tea"), default=len(response.results) + 1)

    assert first_tea(personal) <= first_tea(anonymous)


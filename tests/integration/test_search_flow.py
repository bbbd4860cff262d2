"""End-to-end behaviour of Search, Recommend and Track through the five real servers."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import numpy as np
import pytest
from shelfwise.common.v1 import common_pb2
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2
from shelfwise.retrieval.v1 import retrieval_pb2, retrieval_pb2_grpc

from services.common.channels import create_channel
from services.events.config import DEVELOPMENT_USER_ID_KEY
from services.events.pseudonyms import UserIdPseudonyms


def click(request_id: str, result, event_id: str | None = None) -> events_pb2.Interaction:
    return events_pb2.Interaction(
        event_id=event_id or uuid.uuid4().hex,
        type=events_pb2.INTERACTION_TYPE_CLICK,
        request_id=request_id,
        product_id=result.product.id,
        position=result.position,
    )


DRINKS = {"Red Wine", "White Wine", "Sparkling Wine", "Beer", "Spirits", "Coffee", "Tea"}
ALCOHOL = {"Red Wine", "White Wine", "Sparkling Wine", "Beer", "Spirits"}


async def test_semantic_query_finds_drinks_without_shared_words(gateway):
    # No title says "drink" or "steak": the encoders and the category vote find drinks by meaning.
    response = await gateway.Search(gateway_pb2.SearchRequest(query="something to drink with steak", page_size=5))
    categories = [r.product.category for r in response.results]
    assert len(categories) == 5 and set(categories) <= DRINKS, [r.product.title for r in response.results]
    assert ALCOHOL & set(categories), [r.product.title for r in response.results]
    for result in response.results:
        assert not {"drink", "steak"} & set(result.product.title.lower().split())


async def test_search_reads_price_color_and_misspelling_from_the_text(gateway):
    response = await gateway.Search(gateway_pb2.SearchRequest(query="red runing shoes under $50", page_size=5))
    assert response.interpretation.corrected_query == "red running shoes under $50"
    assert response.interpretation.extracted_filters.price.max == 50
    assert response.results, "expected red running shoes under $50"
    assert all(r.product.price <= 50 for r in response.results)
    assert response.results[0].product.category == "Running Shoes"
    assert response.results[0].product.attributes["color"] == "red"
    assert [r.position for r in response.results] == list(range(1, len(response.results) + 1))
    assert all(r.reasons for r in response.results)
    assert "ranker=" in response.model_version and "text_encoder=" in response.model_version
    assert {t.stage for t in response.timings} == {"query_understanding", "retrieval", "ranking"}
    assert not response.degraded_stages


async def test_explicit_filters_are_hard(gateway):
    filters = common_pb2.Filters(categories=["Coffee"], price=common_pb2.PriceRange(max=15))
    response = await gateway.Search(gateway_pb2.SearchRequest(query="dark roast", filters=filters, page_size=20))
    assert response.results
    assert all(r.product.category == "Coffee" and r.product.price <= 15 for r in response.results)


async def test_chinese_query_finds_chinese_tea(gateway):
    response = await gateway.Search(gateway_pb2.SearchRequest(query="绿茶", page_size=3))
    assert response.interpretation.language == "zh"
    # Query understanding's English rendering, which retrieval searched with next to the query.
    assert response.interpretation.translated_text == "green tea"
    assert response.results[0].product.category == "Tea"
    english = await gateway.Search(gateway_pb2.SearchRequest(query="green tea", page_size=3))
    assert english.interpretation.translated_text == ""


async def _embedded(model: str, texts: list[str], kind: str) -> np.ndarray:
    from services.common.config import model_repository
    from services.common.inference import EmbeddedOnnxRuntime
    from services.common.text_encoder import TextEncoder

    encoder = TextEncoder(EmbeddedOnnxRuntime(model_repository()), model_name=model)
    return await encoder.encode(texts, kind=kind)


@pytest.mark.parametrize("query, rendering, english_reads, multilingual_reads", [
    ("green tea", "", "green tea", "green tea"),
    ("绿茶", "green tea", "green tea", "绿茶"),
])
async def test_retrieval_routes_english_text_to_the_english_space_and_the_query_as_typed_to_the_multilingual_one(
    system, query, rendering, english_reads, multilingual_reads
):
    """Every candidate's dense_score is its cosine with what the English space (MiniLM) read,
    its multilingual_score with what the multilingual space (the Universal Sentence Encoder)
    read, recomputed here with the same model files: a Chinese query reaches the English space
    only through its rendering, and the multilingual space as typed."""
    from services.retrieval.servicer import product_from_pb

    async with create_channel(system.address("retrieval")) as channel:
        retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        response = await retrieval.Retrieve(
            retrieval_pb2.RetrieveRequest(query_text=query, translated_text=rendering, limit=50)
        )
    assert response.model_version == "text_encoder/1+text_encoder_use/1" and not response.degraded_components
    candidates = list(response.candidates)
    texts = [product_from_pb(c.product).embedding_text() for c in candidates]
    for model, read, field, tolerance in (
        ("text_encoder", english_reads, "dense_score", 1e-4),
        # int8 activations are scaled per batch: a vector moves a little with its batch.
        ("text_encoder_use", multilingual_reads, "multilingual_score", 2e-2),
    ):
        expected = (await _embedded(model, texts, "passage")) @ (await _embedded(model, [read], "query"))[0]
        got = np.array([getattr(c, field) for c in candidates])
        assert np.max(np.abs(got - expected)) < tolerance, (model, read)
    # The English space's five nearest to the rendering are the teas.
    nearest = sorted((c for c in candidates if c.dense_rank), key=lambda c: c.dense_rank)[:5]
    assert [c.product.category for c in nearest] == ["Tea"] * 5, [c.product.title for c in nearest]


async def test_pages_continue_without_overlap(gateway):
    first = await gateway.Search(gateway_pb2.SearchRequest(query="headphones", page_size=4))
    assert first.next_page_token
    second = await gateway.Search(
        gateway_pb2.SearchRequest(query="headphones", page_size=4, page_token=first.next_page_token)
    )
    assert [r.position for r in second.results] == [5, 6, 7, 8]
    assert not {r.product.id for r in first.results} & {r.product.id for r in second.results}


async def test_search_then_click_stores_one_impression_and_one_click(gateway, system, database):
    response = await gateway.Search(gateway_pb2.SearchRequest(query="espresso", page_size=5, user_id="u-1"))
    second = response.results[1]
    event = click(response.request_id, second, event_id=f"click-{response.request_id}")
    tracked = await gateway.Track(gateway_pb2.TrackRequest(interactions=[event]))
    assert (tracked.accepted, tracked.duplicates) == (1, 0)
    repeated = await gateway.Track(gateway_pb2.TrackRequest(interactions=[event]))
    assert (repeated.accepted, repeated.duplicates) == (0, 1)

    impressions = await database.fetch(
        "SELECT product_ids, first_position, user_id FROM impressions WHERE request_id = $1", response.request_id
    )
    assert len(impressions) == 1
    assert impressions[0]["product_ids"] == [r.product.id for r in response.results]
    # Stored pseudonymised (services.events.pseudonyms.UserIdPseudonyms), with the development key here.
    pseudonym = UserIdPseudonyms(DEVELOPMENT_USER_ID_KEY)("u-1")
    assert impressions[0]["first_position"] == 1 and impressions[0]["user_id"] == pseudonym != "u-1"
    clicks = await database.fetch(
        "SELECT product_id, position, type FROM interactions WHERE request_id = $1", response.request_id
    )
    assert [(c["product_id"], c["position"], c["type"]) for c in clicks] == [(second.product.id, 2, "click")]


async def test_metrics_count_the_click_of_a_request(gateway, system):
    from shelfwise.events.v1 import events_pb2_grpc

    response = await gateway.Search(gateway_pb2.SearchRequest(query="tent", page_size=3))
    await gateway.Track(gateway_pb2.TrackRequest(interactions=[click(response.request_id, response.results[0])]))
    async with create_channel(system.address("events")) as channel:
        metrics = await events_pb2_grpc.EventsServiceStub(channel).GetMetrics(
            events_pb2.GetMetricsRequest(group_by=events_pb2.METRICS_GROUPING_REQUEST, request_id=response.request_id)
        )
    (row,) = metrics.rows
    assert (row.key, row.requests, row.impressions, row.clicks) == (response.request_id, 1, 3, 1)
    assert row.ctr == pytest.approx(1 / 3)


async def test_a_search_that_finds_nothing_is_logged_as_a_request_with_nothing_shown(gateway, system, database):
    from shelfwise.events.v1 import events_pb2_grpc

    response = await gateway.Search(gateway_pb2.SearchRequest(
        query="tent", page_size=3, filters=common_pb2.Filters(price=common_pb2.PriceRange(max=0.01)), user_id="u-empty",
    ))
    assert not response.results
    await system.servers["gateway"].app.wait_for_impressions([response.request_id])
    (row,) = await database.fetch("SELECT product_ids FROM impressions WHERE request_id = $1", response.request_id)
    assert row["product_ids"] == []
    async with create_channel(system.address("events")) as channel:
        metrics = await events_pb2_grpc.EventsServiceStub(channel).GetMetrics(
            events_pb2.GetMetricsRequest(group_by=events_pb2.METRICS_GROUPING_REQUEST, request_id=response.request_id)
        )
    (metric,) = metrics.rows
    assert (metric.requests, metric.impressions, metric.clicks) == (1, 0, 0)
    # Nothing was shown, so nothing can be clicked.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await gateway.Track(gateway_pb2.TrackRequest(interactions=[events_pb2.Interaction(
            event_id=f"click-{response.request_id}", type=events_pb2.INTERACTION_TYPE_CLICK,
            request_id=response.request_id, product_id="anything", position=1,
        )]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_click_on_a_product_not_shown_is_rejected(gateway):
    response = await gateway.Search(gateway_pb2.SearchRequest(query="lager", page_size=2))
    wrong = click(response.request_id, response.results[0])
    wrong.position = 2
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await gateway.Track(gateway_pb2.TrackRequest(interactions=[wrong]))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "position" in raised.value.details()


async def test_upsert_and_delete_change_results_without_rebuild(gateway, system):
    product = common_pb2.Product(
        id="test-zanzibar-1", title="Zanzibar Clove Spice Blend", description="Whole cloves from Pemba island.",
        brand="Spicecraft", category="Pantry", price=7.5, currency="USD", locale="en-US",
    )
    async with create_channel(system.address("retrieval")) as channel:
        retrieval = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        upserted = await retrieval.UpsertProducts(retrieval_pb2.UpsertProductsRequest(products=[product]))
        assert upserted.inserted == 1
        found = await gateway.Search(gateway_pb2.SearchRequest(query="zanzibar cloves", page_size=3))
        assert found.results[0].product.id == product.id

        product.title = "Zanzibar Clove Spice Blend, Refill Pack"
        updated = await retrieval.UpsertProducts(retrieval_pb2.UpsertProductsRequest(products=[product]))
        assert (updated.inserted, updated.updated) == (0, 1)
        found = await gateway.Search(gateway_pb2.SearchRequest(query="zanzibar cloves", page_size=3))
        assert found.results[0].product.title.endswith("Refill Pack")
        assert [r.product.id for r in found.results].count(product.id) == 1

        deleted = await retrieval.DeleteProducts(retrieval_pb2.DeleteProductsRequest(product_ids=[product.id, "nope"]))
        assert deleted.deleted == 1 and list(deleted.not_found_ids) == ["nope"]
        gone = await gateway.Search(gateway_pb2.SearchRequest(query="zanzibar cloves", page_size=10))
        assert product.id not in {r.product.id for r in gone.results}


async def test_recommend_similar_items_are_neighbours(gateway):
    response = await gateway.Recommend(
        gateway_pb2.RecommendRequest(
            mode=gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS, product_id="sku-redwine-0001", page_size=5
        )
    )
    assert "sku-redwine-0001" not in {r.product.id for r in response.results}
    assert sum(r.product.category == "Red Wine" for r in response.results) >= 3


async def test_recommend_popular_in_category_follows_clicks(gateway, system):
    search = await gateway.Search(
        gateway_pb2.SearchRequest(query="board game", filters=common_pb2.Filters(categories=["Board Games"]), page_size=10)
    )
    target = search.results[-1]
    events = [click(search.request_id, target) for _ in range(5)]
    await gateway.Track(gateway_pb2.TrackRequest(interactions=events))
    for _ in range(50):  # ranking refreshes popularity every 0.3 s in tests
        response = await gateway.Recommend(
            gateway_pb2.RecommendRequest(
                mode=gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY, category="Board Games", page_size=3
            )
        )
        if response.results[0].product.id == target.product.id:
            break
        await asyncio.sleep(0.2)
    assert response.results[0].product.id == target.product.id
    assert all(r.product.category == "Board Games" for r in response.results)
    assert [reason.feature for reason in response.results[0].reasons] == ["popular"]
    assert response.results[0].score >= 5  # its five clicks


async def test_a_second_retrieval_replica_follows_upserts_and_deletes_of_the_first(system):
    """Replicas share PostgreSQL, not memory: each applies the others' writes on its next sync."""
    from services.retrieval.config import RetrievalSettings
    from services.retrieval.server import create_server as create_retrieval

    replica = await create_retrieval(
        RetrievalSettings.from_env({**system.environ, "SHELFWISE_CATALOG_SYNC_SECONDS": "0.2"}), port=0
    )
    product = common_pb2.Product(
        id="test-replica-1", title="Quokka Plush Toy, 30 cm", description="Soft plush quokka from Rottnest.",
        brand="Marsupial Friends", category="Toys", price=24.0, currency="USD", locale="en-US",
    )
    request = retrieval_pb2.RetrieveRequest(query_text="quokka plush", limit=5)
    try:
        async with create_channel(system.address("retrieval")) as first, create_channel(
            f"127.0.0.1:{replica.port}"
        ) as second:
            writer = retrieval_pb2_grpc.RetrievalServiceStub(first)
            reader = retrieval_pb2_grpc.RetrievalServiceStub(second)
            await writer.UpsertProducts(retrieval_pb2.UpsertProductsRequest(products=[product]))
            for _ in range(50):
                found = await reader.Retrieve(request)
                if found.candidates and found.candidates[0].product.id == product.id:
                    break
                await asyncio.sleep(0.1)
            assert found.candidates[0].product.id == product.id

            await writer.DeleteProducts(retrieval_pb2.DeleteProductsRequest(product_ids=[product.id]))
            for _ in range(50):
                found = await reader.Retrieve(request)
                if product.id not in {c.product.id for c in found.candidates}:
                    break
                await asyncio.sleep(0.1)
            assert product.id not in {c.product.id for c in found.candidates}
    finally:
        await replica.stop()

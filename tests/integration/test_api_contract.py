"""The API contract a new user meets through the five real servers on the demo catalogue: facet
values matched ignoring case and spaces (unknown ones named with close known values), page
tokens bound to their request, unknown history ids reported, fallback results labelled, one
wording for required fields and enum values."""

from __future__ import annotations

import grpc
import pytest
from shelfwise.common.v1 import common_pb2
from shelfwise.gateway.v1 import gateway_pb2


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

"""Unit tests of services.gateway.validation: page size, request id and filters."""

from __future__ import annotations

import pytest
from shelfwise.common.v1 import common_pb2
from shelfwise.gateway.v1 import gateway_pb2

from services.common.errors import InvalidArgument
from services.gateway.validation import DEFAULT_PAGE_SIZE, page_size_of, request_id_of, validate_filters
from tests.support.filters import price


# --- page size -------------------------------------------------------------------------------


def test_page_size_defaults_to_10_when_unset() -> None:
    assert DEFAULT_PAGE_SIZE == 10
    assert page_size_of(gateway_pb2.SearchRequest(query="shoes")) == 10


@pytest.mark.parametrize("size", [1, 25, 100])
def test_page_size_accepts_1_to_100(size) -> None:
    assert page_size_of(gateway_pb2.SearchRequest(query="shoes", page_size=size)) == size


@pytest.mark.parametrize("size", [0, 101, -5])
def test_page_size_rejects_out_of_range(size) -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_size_of(gateway_pb2.SearchRequest(query="shoes", page_size=size))
    assert caught.value.field == "page_size"
    assert str(size) in caught.value.rule


def test_page_size_works_for_recommend_requests() -> None:
    assert page_size_of(gateway_pb2.RecommendRequest()) == 10
    assert page_size_of(gateway_pb2.RecommendRequest(page_size=7)) == 7


# --- request id ------------------------------------------------------------------------------


def test_request_id_is_generated_when_unset_and_kept_when_given() -> None:
    generated = request_id_of(gateway_pb2.SearchRequest())
    assert len(generated) == 32 and generated != request_id_of(gateway_pb2.SearchRequest())
    assert request_id_of(gateway_pb2.SearchRequest(request_id="req-1")) == "req-1"


@pytest.mark.parametrize("request_id", ["r" * 129, "bad\nid"])
def test_request_id_rejects_long_or_unprintable(request_id) -> None:
    with pytest.raises(InvalidArgument) as caught:
        request_id_of(gateway_pb2.SearchRequest(request_id=request_id))
    assert caught.value.field == "request_id"


# --- filters -------------------------------------------------------------------------------

def test_validate_filters_accepts_good_bounds() -> None:
    validate_filters(price(min=0, max=0))
    validate_filters(price(min=10, max=20))
    validate_filters(price(max=1e9))
    validate_filters(common_pb2.Filters())


@pytest.mark.parametrize(
    "filters, field",
    [
        (price(min=-1), "filters.price.min"),
        (price(max=-0.5), "filters.price.max"),
        (price(min=float("nan")), "filters.price.min"),
        (price(max=float("nan")), "filters.price.max"),
        (price(min=float("inf")), "filters.price.min"),
        (price(max=float("inf")), "filters.price.max"),
        (price(min=float("-inf")), "filters.price.min"),
        (price(min=50, max=10), "filters.price"),
    ],
)
def test_validate_filters_rejects_bad_bounds_with_field_path(filters, field) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_filters(filters)
    assert caught.value.field == field


def test_validate_filters_uses_given_prefix() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_filters(price(min=-1), where="request.filters")
    assert caught.value.field == "request.filters.price.min"

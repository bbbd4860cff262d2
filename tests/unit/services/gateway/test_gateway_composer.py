"""Unit tests of the pure helpers of services.gateway.composer: page tokens, page size, filters,
deadline budget and the fallback query understanding."""

from __future__ import annotations

import base64
import time

import pytest
from shelfwise.common.v1 import common_pb2
from shelfwise.gateway.v1 import gateway_pb2

from services.common.errors import DeadlineExceeded, InvalidArgument
from services.gateway.composer import (
    DEFAULT_PAGE_SIZE,
    RESERVE_SECONDS,
    Budget,
    decode_page_token,
    encode_page_token,
    fallback_understanding,
    merged_filters,
    page_size_of,
    request_id_of,
    validate_filters,
)


def b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def price(min: float | None = None, max: float | None = None) -> common_pb2.Filters:
    filters = common_pb2.Filters()
    if min is not None:
        filters.price.min = min
    if max is not None:
        filters.price.max = max
    return filters


def bounds(filters: common_pb2.Filters) -> tuple[float | None, float | None]:
    return (
        filters.price.min if filters.price.HasField("min") else None,
        filters.price.max if filters.price.HasField("max") else None,
    )


# --- page tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, 1, 10, 99, 12_345, 100_000])
def test_page_token_round_trips(offset) -> None:
    token = encode_page_token(offset)
    assert "=" not in token
    assert decode_page_token(token) == offset


def test_empty_page_token_means_first_page() -> None:
    assert decode_page_token("") == 0


def test_padded_page_token_is_also_accepted() -> None:
    assert decode_page_token(base64.urlsafe_b64encode(b"offset:20").decode()) == 20


@pytest.mark.parametrize(
    "token", ["abc", b64("offset:-1"), b64("other:3"), b64("offset:"), b64("offset:x"), b64("3"), "!!!!", "a"]
)
def test_malformed_page_token_is_invalid_argument(token) -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(token)
    assert caught.value.field == "page_token"


def test_page_token_with_offset_beyond_int32_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(b64(f"offset:{2**31}"))
    assert caught.value.field == "page_token"


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


# --- filters ---------------------------------------------------------------------------------


def test_merged_filters_takes_text_price_where_caller_set_none() -> None:
    requested = common_pb2.Filters(categories=["Shoes"], brands=["Stride"])
    requested.attributes["color"] = "red"
    merged = merged_filters(requested, price(min=10, max=50))
    assert bounds(merged) == (10, 50)
    assert list(merged.categories) == ["Shoes"] and list(merged.brands) == ["Stride"]
    assert dict(merged.attributes) == {"color": "red"}


def test_merged_filters_callers_bounds_win_over_text() -> None:
    assert bounds(merged_filters(price(min=5, max=80), price(min=10, max=50))) == (5, 80)
    assert bounds(merged_filters(price(max=80), price(min=10, max=50))) == (10, 80)
    assert bounds(merged_filters(price(min=20), price(max=50))) == (20, 50)


def test_merged_filters_ignores_text_categories_and_brands() -> None:
    understood = price(max=50)
    understood.categories.append("Hats")
    understood.brands.append("Acme")
    merged = merged_filters(common_pb2.Filters(), understood)
    assert list(merged.categories) == [] and list(merged.brands) == []
    assert bounds(merged) == (None, 50)


def test_merged_filters_does_not_modify_its_inputs() -> None:
    requested, understood = price(min=5), price(max=50)
    merged_filters(requested, understood)
    assert bounds(requested) == (5, None) and bounds(understood) == (None, 50)


def test_merged_filters_keeps_explicit_zero_bound() -> None:
    assert bounds(merged_filters(price(min=0), price(min=10))) == (0, None)


@pytest.mark.parametrize(
    "requested, understood, expected",
    [
        (price(min=100), price(max=50), (100, None)),  # the text's max would contradict the caller's min
        (price(max=20), price(min=50), (None, 20)),  # the text's min would contradict the caller's max
        (price(), price(min=80, max=30), (None, 30)),  # contradictory text alone
        (price(min=30), price(min=80, max=40), (30, 40)),
    ],
)
def test_merged_filters_never_produces_min_above_max(requested, understood, expected) -> None:
    merged = merged_filters(requested, understood)
    low, high = bounds(merged)
    assert low is None or high is None or low <= high
    assert (low, high) == expected


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


# --- budget ----------------------------------------------------------------------------------


def test_budget_without_deadline_gives_the_stage_limit() -> None:
    assert Budget.from_remaining(None).timeout(3.0, "retrieval") == 3.0


def test_budget_gives_stage_limit_when_caller_has_more_time() -> None:
    assert Budget.from_remaining(60.0).timeout(0.5, "retrieval") == 0.5


def test_budget_caps_stage_limit_by_callers_remaining_time() -> None:
    timeout = Budget.from_remaining(0.3).timeout(5.0, "retrieval")
    assert 0.2 < timeout <= 0.3 - RESERVE_SECONDS


@pytest.mark.parametrize("remaining", [0.0, -1.0, RESERVE_SECONDS / 2])
def test_budget_raises_deadline_exceeded_when_no_time_is_left(remaining) -> None:
    with pytest.raises(DeadlineExceeded) as caught:
        Budget.from_remaining(remaining).timeout(5.0, "ranking")
    assert caught.value.message.startswith("ranking:")


def test_budget_runs_out_as_time_passes() -> None:
    budget = Budget(deadline=time.monotonic() - 0.001)
    with pytest.raises(DeadlineExceeded):
        budget.timeout(1.0, "query_understanding")


# --- fallback understanding ------------------------------------------------------------------


def test_fallback_understanding_normalizes_text() -> None:
    understood = fallback_understanding("  Red \t RUNNING\nＳｈｏｅｓ  ")
    assert understood.original_query == "  Red \t RUNNING\nＳｈｏｅｓ  "
    assert understood.normalized_query == "red running shoes"
    assert understood.corrected_query == "red running shoes"
    assert understood.search_text == "red running shoes"


def test_fallback_understanding_has_no_filters_or_model_version() -> None:
    understood = fallback_understanding("shoes under $50")
    assert understood.search_text == "shoes under $50"
    assert not understood.HasField("filters") or understood.filters == common_pb2.Filters()
    assert understood.model_version == ""

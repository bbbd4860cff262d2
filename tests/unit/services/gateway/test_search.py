"""Unit tests of the pure helpers of services.gateway.search: the hard filters retrieval gets from
the caller's filters and the price the query named."""

from __future__ import annotations

import pytest
from shelfwise.common.v1 import common_pb2

from services.gateway.search import merged_filters
from tests.support.filters import price


def bounds(filters: common_pb2.Filters) -> tuple[float | None, float | None]:
    return (
        filters.price.min if filters.price.HasField("min") else None,
        filters.price.max if filters.price.HasField("max") else None,
    )


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

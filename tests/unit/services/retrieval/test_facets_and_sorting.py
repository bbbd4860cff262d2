"""Facet counts and sort orders over the filter columns (services/retrieval/facets.py and
sorting.py), on a hand-made catalogue whose counts can be read off by eye."""

from __future__ import annotations

import numpy as np
import pytest

from services.common.errors import InvalidArgument
from services.retrieval.catalog import Product
from services.retrieval.facets import auto_price_bounds, count_facet, facet_spec
from services.retrieval.filters import CandidateFilters, FilterColumns
from services.retrieval.sorting import leading_number, sort_spec, sorted_slots

PRODUCTS = [
    Product("a", "A", 5.0, brand="Acme", category="Tea", attributes={"Color": "Red", "abv": "14%"},
            listed_at="2026-01-01T00:00:00+00:00"),
    Product("b", "B", 12.0, brand="acme ", category="Tea", attributes={"color": "red"},
            listed_at="2026-03-01T00:00:00+00:00"),
    Product("c", "C", 30.0, brand="Bolt", category="Coffee", attributes={"color": "Blue", "abv": "1,5 %"}),
    Product("d", "D", 120.0, brand="", category="Coffee", attributes={"abv": "n/a"},
            listed_at="2026-02-01T00:00:00Z"),
    Product("e", "E", 30.0, brand="Bolt", category="Tea", in_stock=False),
]
ALL = np.arange(len(PRODUCTS))


@pytest.fixture
def columns() -> FilterColumns:
    return FilterColumns(PRODUCTS)


def spec(columns, field, max_values=None, bounds=()):
    return facet_spec(field, max_values, bounds, "facets[0]", columns)


def test_brand_counts_merge_spellings_and_skip_products_without_one(columns):
    facet = count_facet(columns, spec(columns, "brand"), ALL, CandidateFilters(brands=("Acme", "acme ")), True)
    assert [(v.value, v.count, v.selected) for v in facet.values] == [("Acme", 2, True), ("Bolt", 2, False)]
    assert (facet.products_with_value, facet.distinct_values, facet.disjunctive) == (4, 2, True)


def test_attribute_counts_only_the_matching_slots_in_the_catalogue_spelling(columns):
    facet = count_facet(columns, spec(columns, "attributes.COLOR"), np.array([0, 1, 2]), CandidateFilters(), False)
    assert [(v.value, v.count) for v in facet.values] == [("Red", 2), ("Blue", 1)]


def test_max_values_keeps_the_most_frequent(columns):
    facet = count_facet(columns, spec(columns, "category", max_values=1), ALL, CandidateFilters(), False)
    assert [(v.value, v.count) for v in facet.values] == [("Tea", 3)] and facet.distinct_values == 2


def test_price_buckets_use_the_given_bounds_and_leave_out_empty_ones(columns):
    facet = count_facet(columns, spec(columns, "price", bounds=(10.0, 20.0, 50.0)), ALL, CandidateFilters(), False)
    assert [(v.value, v.count) for v in facet.values] == [("< 10", 1), ("10-20", 1), ("20-50", 2), (">= 50", 1)]
    assert facet.values[0].low is None and facet.values[-1].high is None
    assert (facet.min_price, facet.max_price) == (5.0, 120.0)


def test_a_price_facet_over_one_price_is_one_bucket(columns):
    facet = count_facet(columns, spec(columns, "price"), np.array([2, 4]), CandidateFilters(), False)
    assert [(v.count, v.low is None or v.low <= 30, v.high is None or v.high > 30) for v in facet.values] == [(2, True, True)]


def test_selected_values_are_shown_beyond_max_values(columns):
    facet = count_facet(columns, spec(columns, "category", max_values=1), ALL, CandidateFilters(categories=("Coffee",)), True)
    assert [(v.value, v.count, v.selected) for v in facet.values] == [("Tea", 3, False), ("Coffee", 2, True)]


def test_automatic_price_bounds_are_round_numbers_within_the_prices():
    bounds = auto_price_bounds(np.array([3.5, 8, 12, 19, 24, 41, 55, 99, 180, 240.0]))
    assert bounds == sorted(set(bounds)) and all(b <= 240 for b in bounds)
    assert all(round(b / 10 ** np.floor(np.log10(b)), 6) in (1, 2, 5, 10) for b in bounds), bounds


@pytest.mark.parametrize("field, max_values, bounds, path", [
    ("colour", None, (), "facets[0].field"),
    ("attributes.flavour", None, (), "facets[0].field"),
    ("attributes.", None, (), "facets[0].field"),
    ("brand", 0, (), "facets[0].max_values"),
    ("brand", None, (5.0,), "facets[0].price_bounds"),
    ("price", None, (5.0, 5.0), "facets[0].price_bounds"),
    ("price", None, (float("nan"),), "facets[0].price_bounds"),
])
def test_bad_facet_requests_name_the_field(columns, field, max_values, bounds, path):
    with pytest.raises(InvalidArgument) as raised:
        spec(columns, field, max_values, bounds)
    assert raised.value.field == path


def ordered(columns, key, attribute=""):
    return [PRODUCTS[i].id for i in sorted_slots(columns, sort_spec(key, attribute, columns), ALL)]


def test_price_sorts_are_stable_on_ties(columns):
    assert ordered(columns, "price_ascending") == ["a", "b", "c", "e", "d"]
    assert ordered(columns, "price_descending") == ["d", "c", "e", "b", "a"]


def test_newest_first_with_unknown_listing_times_last(columns):
    assert ordered(columns, "newest") == ["b", "d", "a", "c", "e"]


def test_attribute_sort_reads_leading_numbers_and_puts_products_without_one_last(columns):
    assert ordered(columns, "attribute_descending", "ABV") == ["a", "c", "b", "d", "e"]
    assert ordered(columns, "attribute_ascending", "abv") == ["c", "a", "b", "d", "e"]
    assert leading_number("1,5 kg") == 1.5 and leading_number("750ml") == 750 and np.isnan(leading_number("n/a"))


@pytest.mark.parametrize("key, attribute, path", [
    ("attribute_ascending", "", "sort.attribute"),
    ("attribute_ascending", "flavour", "sort.attribute"),
    ("price_ascending", "abv", "sort.attribute"),
    ("cheapest", "", "sort.key"),
])
def test_bad_sorts_name_the_field(columns, key, attribute, path):
    with pytest.raises(InvalidArgument) as raised:
        sort_spec(key, attribute, columns)
    assert raised.value.field == path


def test_in_stock_only_filter_leaves_out_of_stock_products_out(columns):
    allowed = columns.narrow(np.ones(len(PRODUCTS), dtype=bool), CandidateFilters(in_stock_only=True))
    assert [p.id for p, keep in zip(PRODUCTS, allowed) if keep] == ["a", "b", "c", "d"]


def test_a_limited_sort_equals_the_first_of_the_full_stable_sort():
    rng = np.random.default_rng(3)
    products = [Product(str(n), "t", float(rng.integers(0, 20)), attributes={"abv": str(rng.integers(0, 5))} if n % 3 else {})
                for n in range(500)]
    columns = FilterColumns(products)
    slots = rng.permutation(500)
    for key, attribute in (("price_ascending", ""), ("price_descending", ""), ("attribute_descending", "abv")):
        spec = sort_spec(key, attribute, columns)
        full = sorted_slots(columns, spec, slots)
        for limit in (1, 7, 50, 124, 600):
            assert sorted_slots(columns, spec, slots, limit).tolist() == full[:limit].tolist(), (key, limit)


def test_attribute_counts_over_few_slots_equal_those_over_a_mask():
    rng = np.random.default_rng(5)
    products = [Product(str(n), "t", 1.0, attributes={"color": str(rng.integers(0, 7))} if rng.random() < 0.6 else {})
                for n in range(3000)]
    columns = FilterColumns(products)
    color = spec(columns, "attributes.color", max_values=100)
    for size in (1, 20, 150, 2500):
        slots = rng.choice(3000, size=size, replace=False)  # in candidate (not slot) order
        counted = {v.value: v.count for v in count_facet(columns, color, slots, CandidateFilters(), False).values}
        expected = {}
        for slot in slots.tolist():
            value = products[slot].attributes.get("color")
            if value is not None:
                expected[value] = expected.get(value, 0) + 1
        assert counted == expected, size

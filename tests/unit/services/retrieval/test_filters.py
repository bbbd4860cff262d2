"""Candidate filters as vectorised columns (services.retrieval.filters.FilterColumns): for any
products, appended in any batches, and any filters, the columns allow exactly the products that
`matches` (the filters' meaning, product by product) accepts; and the catalogue index keeps them
right through updates, deletes and compaction."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgument
from services.retrieval.catalog import Product
from services.retrieval.filters import CandidateFilters, FilterColumns, matches
from services.retrieval.growing_array import GrowingArray
from services.retrieval.retriever import CatalogIndex
from tests.support.retrieval import HashingEncoder

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Few distinct spellings, so that filters hit products often; case and spaces vary on purpose.
NAMES = st.sampled_from(["color", "Color", "COLOR", "size", "material", " color ", ""])
VALUES = st.sampled_from(["red", "Red", "RED", "blue", "", " red", "straße", "STRASSE", "xl"])
CATEGORIES = st.sampled_from(["Shoes", "shoes", "Red Wine", "", "Tents", "Lamps"])
BRANDS = st.sampled_from(["Acme", "acme", "Globex", ""])
PRICES = st.sampled_from([0.0, 4.99, 5.0, 19.5, 100.0])

PRODUCTS = st.builds(
    lambda n, category, brand, price, attributes: Product(
        id=f"p{n}", title="t", category=category, brand=brand, price=price, attributes=attributes
    ),
    st.integers(0, 10**6),
    CATEGORIES,
    BRANDS,
    PRICES,
    st.dictionaries(NAMES, VALUES, max_size=3),
)
FILTERS = st.builds(
    CandidateFilters,
    categories=st.lists(CATEGORIES, max_size=6).map(tuple),  # over 4: the table lookup
    brands=st.lists(BRANDS, max_size=6).map(tuple),
    price_min=st.one_of(st.none(), PRICES),
    price_max=st.one_of(st.none(), PRICES),
    attributes=st.dictionaries(NAMES, VALUES, max_size=2),
)


@PROPERTY_SETTINGS
@given(batches=st.lists(st.lists(PRODUCTS, max_size=6), max_size=4), filters=FILTERS, seed=st.integers(0, 2**32 - 1))
def test_columns_allow_exactly_the_products_that_match(batches, filters, seed) -> None:
    columns = FilterColumns()
    for batch in batches:
        columns.append(batch)
    products = [product for batch in batches for product in batch]
    alive = np.random.default_rng(seed).random(len(products)) < 0.8
    allowed = columns.narrow(alive.copy(), filters)
    expected = [bool(live) and matches(product, filters) for live, product in zip(alive, products)]
    assert allowed.tolist() == expected


def test_attributes_match_names_and_values_ignoring_case_and_the_filters_spaces() -> None:
    products = [
        Product(id="a", title="t", price=1.0, attributes={"Color": "Red"}),
        Product(id="b", title="t", price=1.0, attributes={"color": "blue"}),
        Product(id="c", title="t", price=1.0),
    ]
    columns = FilterColumns(products)

    def allowed(**filters) -> list[bool]:
        return columns.narrow(np.ones(3, dtype=bool), CandidateFilters(**filters)).tolist()

    assert allowed(attributes={" COLOR ": "red "}) == [True, False, False]
    assert allowed(attributes={"color": "green"}) == [False, False, False]  # a value no product has
    assert allowed(attributes={"weight": "red"}) == [False, False, False]  # a name no product has
    assert allowed(categories=("nowhere",)) == [False, False, False]
    assert allowed() == [True, True, True]


def test_a_growing_array_keeps_its_rows_and_earlier_views_through_growth() -> None:
    array = GrowingArray(np.float32, (2,))
    assert array.append([[1, 2]]).tolist() == [0]
    before = array.values
    slots = array.append(np.arange(4000, dtype=np.float32).reshape(2000, 2))
    assert slots.tolist() == list(range(1, 2001))
    assert len(array) == 2001
    assert array.values[0].tolist() == [1, 2] and array.values[-1].tolist() == [3998, 3999]
    assert before.tolist() == [[1, 2]]  # a search holding the old view still reads its rows


async def test_the_catalogue_index_filters_right_after_updates_deletes_and_compaction() -> None:
    encoder = HashingEncoder()
    catalog = CatalogIndex(store=None, encoder=encoder)
    count = 1_001  # three rounds leave 2,002 dead slots against 1,001 live: the index compacts

    def products(round_: int) -> list[Product]:
        # Round by round, a product's colour changes, so stale slots would answer wrongly.
        colors = ("red", "blue", "green")
        return [
            Product(id=f"p{n}", title=f"item {n}", price=float(n), category=f"c{n % 3}",
                    attributes={"color": colors[(n + round_) % 3]})
            for n in range(count)
        ]

    for round_ in range(3):
        batch = products(round_)
        catalog.slots.apply_upsert(batch, await encoder.encode([p.embedding_text() for p in batch], kind="passage"))
    assert catalog.slots.dense.slots == count  # compacted
    filters = CandidateFilters(categories=("c1",), attributes={"color": "red"}, price_max=500.0)
    expected = {p.id for p in products(2) if matches(p, filters)}
    result = await catalog.retrieve("item", filters, limit=1_000)
    assert {c.product.id for c in result.candidates} == expected
    assert result.total_matching == len(expected)


BENCH_FILTERS = {"none", "category", "brand", "color", "category + color", "price 20-80", "all four"}


def test_bench_filters_prints_every_filter_with_both_timings(capsys) -> None:
    from services.cli.main import main

    assert main(["bench", "filters", "--items", "3000", "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "SYNTHETIC" in lines[0]
    facets_at = next(n for n, line in enumerate(lines) if line.startswith("Facets"))
    rows = {line[:18].strip(): line.split()[-4:] for line in lines[:facets_at] if line[:18].strip() in BENCH_FILTERS}
    assert set(rows) == BENCH_FILTERS
    assert rows["none"][0] == "3,000"
    assert all(row[3].endswith("x") for row in rows.values())
    facet_rows = {line[:18].strip(): line.split()[-5:] for line in lines[facets_at:] if line[:18].strip() in BENCH_FILTERS}
    assert set(facet_rows) == BENCH_FILTERS and facet_rows["none"][0] == "3,000"
    assert all(float(cell) >= 0 for row in facet_rows.values() for cell in row[1:])
    assert main(["bench", "filters", "--items", "0"]) == 2



def test_resolve_finds_the_catalogues_spellings_and_names_unknown_values() -> None:
    columns = FilterColumns([
        Product(id="a", title="t", price=1.0, category="Red Wine", brand="Acme", attributes={"Color": "Dark  Red"}),
        Product(id="b", title="t", price=1.0, category="red wine", brand="Globex"),
        Product(id="c", title="t", price=1.0, category="Coffee"),
    ])
    resolved = columns.resolve(CandidateFilters(categories=("  RED wine ",), brands=("acme",)))
    assert resolved.categories == ("Red Wine", "red wine") and resolved.brands == ("Acme",)
    columns.resolve(CandidateFilters(attributes={"color": "dark red"}))  # known, ignoring case and spaces
    with pytest.raises(InvalidArgument) as caught:
        columns.resolve(CandidateFilters(categories=("Coffee", "cofee")))
    assert caught.value.message == "filters.categories[1]: no product has category 'cofee'; close known values: 'Coffee'"
    with pytest.raises(InvalidArgument) as caught:
        columns.resolve(CandidateFilters(attributes={"colour": "red"}))
    assert caught.value.field == "filters.attributes['colour']" and "'color'" in caught.value.rule
    with pytest.raises(InvalidArgument) as caught:
        columns.resolve(CandidateFilters(brands=("Initech",)))
    assert caught.value.rule == "no product has brand 'Initech'; no known value is close"

"""`shelfwise bench filters`: what a search's hard filters (the caller's facets: category,
brand, attributes, price) cost the catalogue index at a given catalogue size.

Each filter runs through `FilterColumns.narrow` (int32-coded columns: what retrieval runs, on
the event loop, for every search) and through a per-product scan of the same filter
(`filters.matches` over every live product: what retrieval did for attribute filters before
the columns), in alternating rounds so that a neighbour's load favours neither; a cell is the
median of its rounds. A second table times the facet counts and the price sort of the matching
set (services/retrieval/facets.py, sorting.py) next to the filter itself. The two must allow the same products, or the command fails. Building
the columns is timed too, in import batches of 500. The catalogue is synthetic
(`services.local.synthetic_catalog`), generated in memory: no services, models or database.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter

import numpy as np

from services.local.synthetic_catalog import DESCRIPTION, generate_products
from services.retrieval.catalog import chunked
from services.retrieval.filters import CandidateFilters, FilterColumns, matches

IMPORT_BATCH = 500
# What a sorted browse needs of the sorted matching set: a candidate list (retrieval's default).
SORTED_PAGE = 200


def typical_filters(products) -> dict[str, CandidateFilters]:
    """Facets a shop's front end sends, on the catalogue's most common values."""
    category = Counter(p.category for p in products).most_common(1)[0][0]
    brand = Counter(p.brand for p in products).most_common(1)[0][0]
    color = Counter(p.attributes["color"] for p in products if "color" in p.attributes).most_common(1)[0][0]
    in_category = [p for p in products if p.category == category and "color" in p.attributes]
    category_color = Counter(p.attributes["color"] for p in in_category).most_common(1)[0][0] if in_category else color
    return {
        "none": CandidateFilters(),
        "category": CandidateFilters(categories=(category,)),
        "brand": CandidateFilters(brands=(brand,)),
        "color": CandidateFilters(attributes={"color": color}),
        "category + color": CandidateFilters(categories=(category,), attributes={"color": category_color}),
        "price 20-80": CandidateFilters(price_min=20.0, price_max=80.0),
        "all four": CandidateFilters(
            categories=(category,), brands=(brand,), attributes={"color": category_color}, price_max=200.0
        ),
    }


def _milliseconds(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return (time.perf_counter() - start) * 1000, result


def bench_filters(items: int, rounds: int, seed: int) -> str:
    products = list(generate_products(items, seed))
    build_ms, columns = _milliseconds(lambda: _build(products))
    alive = np.ones(len(products), dtype=bool)
    lines = [
        f"Candidate filters over {items:,} products: {DESCRIPTION}",
        f"{rounds} alternating rounds per filter, median ms per search; 'scan' tests every product in Python.",
        f"Building the columns in batches of {IMPORT_BATCH}: {build_ms / 1000:.2f} s "
        f"({items / max(build_ms / 1000, 1e-9):,.0f} products/s).",
        "",
        f"{'filter':<18} {'allowed':>9} {'columns ms':>11} {'scan ms':>9} {'ratio':>8}",
    ]
    for name, filters in typical_filters(products).items():
        column_times, scan_times = [], []
        for _ in range(rounds):
            elapsed, allowed = _milliseconds(lambda: columns.narrow(alive.copy(), filters))
            column_times.append(elapsed)
            elapsed, scanned = _milliseconds(lambda: [matches(p, filters) for p in products])
            scan_times.append(elapsed)
            if allowed.tolist() != scanned:
                raise AssertionError(f"filter {name!r}: the columns and the scan allow different products")
        columns_ms, scan_ms = statistics.median(column_times), statistics.median(scan_times)
        lines.append(
            f"{name:<18} {int(allowed.sum()):>9,} {columns_ms:>11.2f} {scan_ms:>9.1f} {scan_ms / columns_ms:>7.0f}x"
        )
    return "\n".join(lines + [""] + facet_lines(products, columns, rounds, seed))


def facet_lines(products, columns: FilterColumns, rounds: int, seed: int) -> list[str]:
    """What facets and a price sort add to a search, per filter: the four facets a result page
    shows (BENCH_FACETS: category, brand, price buckets, color) counted over every product the
    filters allow (a query that is only filters browses them all) and over 200 of them (a text
    query's candidates), and the first 200 of the matching set by price (a sorted browse);
    medians of alternating rounds. The category counts are checked against a count in Python,
    and the partial sort against a full one, or the command fails."""
    from services.cli.bench.search import BENCH_FACETS
    from services.retrieval.facets import count_facet, facet_spec
    from services.retrieval.sorting import sort_spec, sorted_slots

    specs = [facet_spec(field, None, (), "facets", columns) for field in BENCH_FACETS]
    by_price = sort_spec("price_ascending", "", columns)
    rng = np.random.default_rng(seed)
    lines = [
        f"Facets ({', '.join(BENCH_FACETS)}) and a price sort over the matching set, median ms of {rounds} rounds:",
        f"{'filter':<18} {'matching':>9} {'filter ms':>10} {'4 facets ms':>12} {'top 200 by price ms':>20} "
        f"{'facets of 200 ms':>17}",
    ]
    alive = np.ones(len(products), dtype=bool)
    for name, filters in typical_filters(products).items():
        times: dict[str, list[float]] = {"filter": [], "facets": [], "sort": [], "candidates": []}
        for _ in range(rounds):
            elapsed, allowed = _milliseconds(lambda: columns.narrow(alive.copy(), filters))
            times["filter"].append(elapsed)
            slots = np.flatnonzero(allowed)
            elapsed, counted = _milliseconds(lambda: [count_facet(columns, spec, slots, filters, False) for spec in specs])
            times["facets"].append(elapsed)
            elapsed, first = _milliseconds(lambda: sorted_slots(columns, by_price, slots, SORTED_PAGE))
            times["sort"].append(elapsed)
            if first.tolist() != sorted_slots(columns, by_price, slots)[:SORTED_PAGE].tolist():
                raise AssertionError(f"filter {name!r}: the partial sort differs from the full one")
            candidates = rng.choice(slots, size=min(200, len(slots)), replace=False) if len(slots) else slots
            times["candidates"].append(
                _milliseconds(lambda: [count_facet(columns, spec, candidates, filters, False) for spec in specs])[0]
            )
        expected = Counter(products[slot].category for slot in slots.tolist())
        if any(expected[v.value] != v.count for v in counted[0].values) or counted[0].distinct_values != len(expected):
            raise AssertionError(f"filter {name!r}: the category counts differ from a count in Python")
        median = {key: statistics.median(values) for key, values in times.items()}
        lines.append(
            f"{name:<18} {len(slots):>9,} {median['filter']:>10.2f} {median['facets']:>12.2f} "
            f"{median['sort']:>20.2f} {median['candidates']:>17.2f}"
        )
    return lines


def _build(products) -> FilterColumns:
    columns = FilterColumns()
    for batch in chunked(products, IMPORT_BATCH):
        columns.append(batch)
    return columns

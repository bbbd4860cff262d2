"""Facet counts over a matching set of slots: how many matching products carry each category,
brand or attribute value, and how they spread over price buckets.

What "matching" is belongs to the caller (matching.py): for a text query the candidates it
returns, for browsing every product that passes the filters. Counts are numpy work over the
filter columns (services/retrieval/filters.py): a bincount of the category or brand code per
matching slot, or of the value codes of the attribute pairs whose slot matches, so a facet over
a million matching products costs a few milliseconds (`shelfwise bench search --facets`).

Values are merged by facet form (case and spaces ignored, as filters match them) and shown in
the catalogue's most frequent spelling among the matching products; products without a value
(an empty brand) are not a value. Price facets count buckets, either the caller's boundaries or
five buckets at round numbers spanning the matching prices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from services.common.errors import InvalidArgument
from services.common.text import facet_form
from services.retrieval.filters import CandidateFilters, FilterColumns, unknown_value

MAX_FACETS = 20
DEFAULT_MAX_VALUES = 10
MAX_VALUES = 100
MAX_PRICE_BOUNDS = 20
AUTO_PRICE_BUCKETS = 5
CATEGORY, BRAND, PRICE = "category", "brand", "price"
ATTRIBUTE_PREFIX = "attributes."


@dataclass(frozen=True)
class FacetSpec:
    """One requested facet. `field` as requested; `attribute`: the attribute name (facet form)
    of an "attributes.<name>" facet, else ""."""

    field: str
    max_values: int = DEFAULT_MAX_VALUES
    price_bounds: tuple[float, ...] = ()
    attribute: str = ""

    @property
    def kind(self) -> str:
        return ATTRIBUTE_PREFIX if self.attribute else self.field

    def validate(self, where: str, columns: FilterColumns) -> "FacetSpec":
        if self.field not in (CATEGORY, BRAND, PRICE) and not self.attribute:
            raise InvalidArgument(
                f"{where}.field", f"must be category, brand, price or attributes.<name>, got {self.field[:60]!r}"
            )
        if self.attribute and self.attribute not in columns.attribute_names():
            raise unknown_value(f"{where}.field", "attribute", self.attribute, columns.attribute_names())
        if not 1 <= self.max_values <= MAX_VALUES:
            raise InvalidArgument(f"{where}.max_values", f"must be between 1 and {MAX_VALUES}, got {self.max_values}")
        if self.price_bounds and self.field != PRICE:
            raise InvalidArgument(f"{where}.price_bounds", "applies to the price facet only")
        bounds = self.price_bounds
        if len(bounds) > MAX_PRICE_BOUNDS:
            raise InvalidArgument(f"{where}.price_bounds", f"must list at most {MAX_PRICE_BOUNDS} bounds, got {len(bounds)}")
        if any(not math.isfinite(b) or b < 0 for b in bounds) or any(a >= b for a, b in zip(bounds, bounds[1:])):
            raise InvalidArgument(f"{where}.price_bounds", "must be finite numbers >= 0, strictly increasing")
        return self

    def filtered_by(self, filters: CandidateFilters) -> bool:
        """Whether the request filters on this facet's field (its counts are then disjunctive)."""
        if self.field == CATEGORY:
            return bool(filters.categories)
        if self.field == BRAND:
            return bool(filters.brands)
        if self.field == PRICE:
            return filters.price_min is not None or filters.price_max is not None
        return any(facet_form(name) == self.attribute for name in filters.attributes)

    def without_own_filter(self, filters: CandidateFilters) -> CandidateFilters:
        """`filters` less this facet's own (the set its disjunctive counts are over)."""
        if self.field == CATEGORY:
            return replace(filters, categories=())
        if self.field == BRAND:
            return replace(filters, brands=())
        if self.field == PRICE:
            return replace(filters, price_min=None, price_max=None)
        kept = {name: value for name, value in filters.attributes.items() if facet_form(name) != self.attribute}
        return replace(filters, attributes=kept)


def facet_spec(field: str, max_values: int | None, price_bounds, where: str, columns: FilterColumns) -> FacetSpec:
    """A validated FacetSpec from a request's FacetRequest fields."""
    attribute = facet_form(field[len(ATTRIBUTE_PREFIX):]) if field.startswith(ATTRIBUTE_PREFIX) else ""
    if field.startswith(ATTRIBUTE_PREFIX) and not attribute:
        raise InvalidArgument(f"{where}.field", "names no attribute: write attributes.<name>, e.g. attributes.color")
    spec = FacetSpec(field, DEFAULT_MAX_VALUES if max_values is None else max_values, tuple(price_bounds), attribute)
    return spec.validate(where, columns)


@dataclass(frozen=True)
class FacetValueCount:
    value: str
    count: int
    selected: bool = False
    low: float | None = None  # price buckets: min inclusive, max exclusive
    high: float | None = None


@dataclass(frozen=True)
class FacetCounts:
    field: str
    values: tuple[FacetValueCount, ...]
    products_with_value: int
    distinct_values: int
    disjunctive: bool
    min_price: float = 0.0
    max_price: float = 0.0


def count_facet(
    columns: FilterColumns, spec: FacetSpec, slots: np.ndarray, filters: CandidateFilters, disjunctive: bool
) -> FacetCounts:
    """Counts of `spec` over the matching `slots` (int array). `filters`: the request's, for
    marking selected values."""
    if spec.field == PRICE:
        return _price_facet(columns.prices[slots], spec, disjunctive)
    if spec.attribute:
        carrier_slots, value_codes, texts = columns.attribute(spec.attribute)
        codes = value_codes[_carrying(carrier_slots, slots, columns.slots)]
        wanted = {facet_form(v) for n, v in filters.attributes.items() if facet_form(n) == spec.attribute}
    else:
        column, texts = columns.coded(spec.field)
        codes = column[slots]
        wanted = {facet_form(v) for v in (filters.categories if spec.field == CATEGORY else filters.brands)}
    counts = np.bincount(codes, minlength=len(texts)) if len(codes) else np.zeros(len(texts), dtype=np.int64)
    # Merge spellings by facet form; the most frequent spelling names the value.
    merged: dict[str, list] = {}
    for code in np.flatnonzero(counts).tolist():
        text = texts[code]
        form = facet_form(text)
        if not form:
            continue
        count = int(counts[code])
        entry = merged.get(form)
        if entry is None:
            merged[form] = [count, text, count]
        else:
            entry[0] += count
            if count > entry[2]:
                entry[1], entry[2] = text, count
    ordered = sorted(merged.items(), key=lambda item: (-item[1][0], item[1][1]))
    # The values the shopper selected are always shown (after the top ones), however rare.
    shown = ordered[: spec.max_values] + [item for item in ordered[spec.max_values:] if item[0] in wanted]
    values = tuple(FacetValueCount(spelling, count, form in wanted) for form, (count, spelling, _) in shown)
    return FacetCounts(spec.field, values, sum(c for c, _, _ in merged.values()), len(merged), disjunctive)


def _carrying(carrier_slots: np.ndarray, slots: np.ndarray, size: int) -> np.ndarray:
    """Indexes into `carrier_slots` (ascending) of the slots among `slots` (distinct). A few
    slots (a text query's candidates) are found by binary search; many by a mask over every
    slot, a pass over the catalogue (about 1 ms at a million) whatever the number of slots."""
    if len(slots) * 16 < len(carrier_slots):
        positions = np.searchsorted(carrier_slots, slots)
        inside = positions < len(carrier_slots)
        positions, wanted = positions[inside], slots[inside]
        return positions[carrier_slots[positions] == wanted]
    member = np.zeros(size, dtype=bool)
    member[slots] = True
    return np.flatnonzero(member[carrier_slots])


def _price_facet(prices: np.ndarray, spec: FacetSpec, disjunctive: bool) -> FacetCounts:
    if len(prices) == 0:
        return FacetCounts(spec.field, (), 0, 0, disjunctive)
    bounds = list(spec.price_bounds) or auto_price_bounds(prices)
    bucket = np.searchsorted(np.asarray(bounds, dtype=np.float64), prices, side="right")
    counts = np.bincount(bucket, minlength=len(bounds) + 1)
    edges = [None, *bounds, None]
    values = tuple(
        FacetValueCount(_bucket_label(edges[i], edges[i + 1]), int(count), low=edges[i], high=edges[i + 1])
        for i, count in enumerate(counts.tolist()) if count
    )
    return FacetCounts(
        spec.field, values, len(prices), len(values), disjunctive, float(prices.min()), float(prices.max())
    )


def auto_price_bounds(prices: np.ndarray) -> list[float]:
    """Up to AUTO_PRICE_BUCKETS - 1 boundaries at round numbers (1, 2 or 5 times a power of
    ten) near the quantiles of the prices, so each bucket holds a similar share."""
    quantiles = np.quantile(prices, np.linspace(0, 1, AUTO_PRICE_BUCKETS + 1)[1:-1])
    bounds: list[float] = []
    for q in quantiles.tolist():
        bound = _round_number(q)
        if bound > 0 and (not bounds or bound > bounds[-1]) and bound <= float(prices.max()):
            bounds.append(bound)
    return bounds


def _round_number(value: float) -> float:
    if value <= 0:
        return 0.0
    power = 10.0 ** math.floor(math.log10(value))
    return min((m * power for m in (1, 2, 5, 10)), key=lambda candidate: abs(candidate - value))


def _bucket_label(low: float | None, high: float | None) -> str:
    if low is None and high is None:  # no bound: one bucket (e.g. every matching price the same)
        return "any"
    if low is None:
        return f"< {high:g}"
    if high is None:
        return f">= {low:g}"
    return f"{low:g}-{high:g}"

"""Explicit sort orders of the matching set: price up or down, newest first, or a numeric
attribute up or down. Ties keep the order the slots came in (relevance: the fused order, or the
catalogue's for browsing), so pages of a sorted list never shuffle between requests.

Keys come from the filter columns (price, listing time) or, for an attribute, from its value
codes: the leading number of each distinct value, parsed once per distinct value ("14%" -> 14,
"1,5 kg" -> 1.5, "750ml" -> 750), so sorting a million products by "abv" reads each distinct
value once. Products without a number for the attribute come last, in relevance order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from services.common.errors import InvalidArgument
from services.common.text import facet_form
from services.retrieval.filters import FilterColumns, unknown_value

RELEVANCE = "relevance"
PRICE_ASCENDING, PRICE_DESCENDING = "price_ascending", "price_descending"
NEWEST = "newest"
ATTRIBUTE_ASCENDING, ATTRIBUTE_DESCENDING = "attribute_ascending", "attribute_descending"
SORT_KEYS = (RELEVANCE, PRICE_ASCENDING, PRICE_DESCENDING, NEWEST, ATTRIBUTE_ASCENDING, ATTRIBUTE_DESCENDING)
_LEADING_NUMBER = re.compile(r"^\s*[-+]?(\d+(?:[.,]\d+)?|[.,]\d+)")


@dataclass(frozen=True)
class SortSpec:
    key: str = RELEVANCE
    attribute: str = ""  # facet form, ATTRIBUTE keys only

    @property
    def is_relevance(self) -> bool:
        return self.key == RELEVANCE

    def validate(self, columns: FilterColumns, where: str = "sort") -> "SortSpec":
        if self.key not in SORT_KEYS:
            raise InvalidArgument(f"{where}.key", f"must be one of {', '.join(SORT_KEYS)}, got {self.key!r}")
        by_attribute = self.key in (ATTRIBUTE_ASCENDING, ATTRIBUTE_DESCENDING)
        if by_attribute and not self.attribute:
            raise InvalidArgument(f"{where}.attribute", f"is required to sort by an attribute ({self.key})")
        if not by_attribute and self.attribute:
            raise InvalidArgument(f"{where}.attribute", "applies to the ATTRIBUTE sort keys only")
        if by_attribute and self.attribute not in columns.attribute_names():
            raise unknown_value(f"{where}.attribute", "attribute", self.attribute, columns.attribute_names())
        return self


def sort_spec(key: str, attribute: str, columns: FilterColumns) -> SortSpec:
    return SortSpec(key, facet_form(attribute)).validate(columns)


def leading_number(text: str) -> float:
    """The number a value starts with ("1,5 kg" -> 1.5); nan when it starts with none."""
    match = _LEADING_NUMBER.match(text)
    return float(match.group(0).replace(",", ".")) if match else float("nan")


def sorted_slots(columns: FilterColumns, spec: SortSpec, slots: np.ndarray, limit: int | None = None) -> np.ndarray:
    """`slots` in the order of `spec` (a stable sort: ties keep their order); with `limit`,
    only the first `limit` of that order. A limit well below the number of slots is found
    without sorting them all (a sorted browse of a million products needs its first 200): the
    limit-th key by selection, then only the slots up to it are sorted, so the answer is the
    same as the full stable sort's."""
    if spec.is_relevance or len(slots) == 0:
        return slots if limit is None else slots[:limit]
    if spec.key in (PRICE_ASCENDING, PRICE_DESCENDING):
        keys = columns.prices[slots]
        descending = spec.key == PRICE_DESCENDING
    elif spec.key == NEWEST:
        keys = columns.listed[slots]
        descending = True
    else:
        keys = _attribute_numbers(columns, spec.attribute, slots)
        descending = spec.key == ATTRIBUTE_DESCENDING
    # Unknown keys (nan; an unknown listing time is -inf) last whatever the direction.
    unknown = ~np.isfinite(keys)
    ordered_keys = np.where(unknown, np.inf, -keys if descending else keys)
    if limit is not None and limit * 4 < len(slots):
        # Every slot whose key is below the limit-th key, and the ties at it in their order.
        kth = np.partition(ordered_keys, limit - 1)[limit - 1]
        below = np.flatnonzero(ordered_keys < kth)
        at = np.flatnonzero(ordered_keys == kth)[: limit - len(below)]
        kept = np.sort(np.concatenate([below, at]))
        order = kept[np.lexsort((ordered_keys[kept], unknown[kept]))]
        return slots[order]
    order = np.lexsort((ordered_keys, unknown))  # lexsort is stable; the last key is primary
    return slots[order] if limit is None else slots[order[:limit]]


def _attribute_numbers(columns: FilterColumns, attribute: str, slots: np.ndarray) -> np.ndarray:
    carriers = columns.attribute(attribute)
    numbers = np.full(len(slots), np.nan)
    if carriers is None:
        return numbers
    carrier_slots, value_codes, _ = carriers
    value_numbers = columns.value_numbers(leading_number)
    per_slot = np.full(columns.slots, np.nan)
    per_slot[carrier_slots] = value_numbers[value_codes] if len(value_codes) else np.zeros(0)
    return per_slot[slots]

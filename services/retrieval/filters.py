"""Candidate filters, and the per-slot columns that evaluate them without a loop over products.

`FilterColumns` keeps, for every slot of the catalogue index, the product's price and its
category and brand as int32 codes (each distinct string gets one), and for each attribute name
the (slot, value code) pairs of the products that carry it. A search's filters then cost a few
numpy operations. Why: a caller's attribute facet (colour = red) used to loop over every
allowed product's attributes in Python: at 1M products 1.4 s, or 46 ms within one category of
25k, with the event loop, and so every other search, blocked meanwhile; categories and brands
were compared as Python strings (`np.isin`, 16 ms). `shelfwise bench filters --items 1000000`
times each filter here at 0.2-5.2 ms. `matches` states what the filters mean for one product;
the columns must agree with it.

Attributes are sparse (a catalogue may have thousands of attribute names, most on few
products), hence pairs for the products that carry a name rather than a column over every
slot: 12 bytes per product and attribute. A list of slots per value ran 3-5x faster for a
common colour at 1M (0.65 against 2-4 ms) but cost 520 bytes per product when every product
has its own value (a model number; 174 bytes as pairs), 0.5 GB at 1M. Names and values
compare ignoring case and runs of spaces, as shoppers and query understanding spell them. Columns grow by
doubling (`GrowingArray`); the retriever rebuilds them from its products when it compacts the
index, which also forgets the values only deleted products had.

A caller's facet values are resolved against the values the columns know (`resolve`) before
they filter: a category or brand matches ignoring case and spaces (`coffee` finds `Coffee`),
and a value no product carries is INVALID_ARGUMENT naming the field and up to 5 close known
values, rather than an empty page the caller cannot tell from "nothing in stock". Known values
are those of the products indexed since the last compaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
import difflib
from dataclasses import dataclass, field, replace
from datetime import datetime

import numpy as np

from services.common.errors import InvalidArgument
from services.common.text import facet_form
from services.retrieval.catalog import Product
from services.retrieval.growing_array import GrowingArray

MAX_FILTER_CATEGORIES = 100
MAX_FILTER_BRANDS = 100
MAX_FILTER_ATTRIBUTES = 20
# Close known values an unknown facet value's error lists.
MAX_SUGGESTIONS = 5


def close_values(wanted: str, known: Iterable[str]) -> list[str]:
    """Up to MAX_SUGGESTIONS known values closest to `wanted`, compared in their facet forms."""
    by_form: dict[str, str] = {}
    for value in known:
        by_form.setdefault(facet_form(value), value)
    close = difflib.get_close_matches(facet_form(wanted), list(by_form), n=MAX_SUGGESTIONS, cutoff=0.5)
    return [by_form[form] for form in close]


def unknown_value(field_path: str, what: str, wanted: str, known: Iterable[str]) -> InvalidArgument:
    close = close_values(wanted, known)
    hint = f"; close known values: {', '.join(repr(v) for v in close)}" if close else "; no known value is close"
    return InvalidArgument(field_path, f"no product has {what} {wanted!r}{hint}")


@dataclass(frozen=True)
class CandidateFilters:
    """Hard filters: a candidate must match every one that is set. Several categories or
    brands mean any of them; attributes must all match (name and value, ignoring case)."""

    categories: tuple[str, ...] = ()
    brands: tuple[str, ...] = ()
    price_min: float | None = None
    price_max: float | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    in_stock_only: bool = False

    def validate(self, where: str = "filters") -> "CandidateFilters":
        for name, bound in (("price.min", self.price_min), ("price.max", self.price_max)):
            if bound is not None and (not np.isfinite(bound) or bound < 0):
                raise InvalidArgument(f"{where}.{name}", f"must be a finite number >= 0, got {bound}")
        if self.price_min is not None and self.price_max is not None and self.price_min > self.price_max:
            raise InvalidArgument(f"{where}.price", f"min ({self.price_min}) must not exceed max ({self.price_max})")
        if (
            len(self.categories) > MAX_FILTER_CATEGORIES
            or len(self.brands) > MAX_FILTER_BRANDS
            or len(self.attributes) > MAX_FILTER_ATTRIBUTES
        ):
            raise InvalidArgument(
                where,
                f"at most {MAX_FILTER_CATEGORIES} categories, {MAX_FILTER_BRANDS} brands "
                f"and {MAX_FILTER_ATTRIBUTES} attributes",
            )
        return self


class _Codes:
    """Interns strings as int32 codes, in order of first appearance."""

    def __init__(self) -> None:
        self._code_of: dict[str, int] = {}
        self.texts: list[str] = []  # by code
        # facet form -> the spellings of it, in order of first appearance
        self._spellings: dict[str, list[str]] = {}

    def code(self, text: str) -> int:
        code = self._code_of.get(text)
        if code is None:
            code = self._code_of[text] = len(self._code_of)
            self.texts.append(text)
            self._spellings.setdefault(facet_form(text), []).append(text)
        return code

    def spellings(self, text: str) -> list[str]:
        """The known texts with the facet form of `text` (none: no product carries it)."""
        return self._spellings.get(facet_form(text), [])

    def __len__(self) -> int:
        return len(self._code_of)

    def known(self, texts: Iterable[str]) -> list[int]:
        """Codes of the texts that some product carries (the others match nothing)."""
        return [self._code_of[text] for text in texts if text in self._code_of]


def _folded_attributes(attributes: Mapping[str, str]) -> dict[str, str]:
    return {facet_form(name): facet_form(value) for name, value in attributes.items()}


def _wanted_attributes(filters: CandidateFilters) -> dict[str, str]:
    return _folded_attributes(filters.attributes)


def matches(product: Product, filters: CandidateFilters) -> bool:
    """Whether one product passes the filters: their meaning, product by product."""
    if filters.categories and product.category not in filters.categories:
        return False
    if filters.brands and product.brand not in filters.brands:
        return False
    if filters.price_min is not None and not product.price >= filters.price_min:
        return False
    if filters.price_max is not None and not product.price <= filters.price_max:
        return False
    if filters.in_stock_only and not product.in_stock:
        return False
    attributes = _folded_attributes(product.attributes)
    return all(attributes.get(name) == value for name, value in _wanted_attributes(filters).items())


class FilterColumns:
    """Filter columns for slots 0..slots-1, appended in slot order (see the module docstring)."""

    def __init__(self, products: Sequence[Product] = ()) -> None:
        self._price = GrowingArray(np.float64)
        self._in_stock = GrowingArray(np.bool_)
        # Listing time, seconds since the epoch (sort NEWEST); -inf when unknown.
        self._listed = GrowingArray(np.float64)
        self._category = GrowingArray(np.int32)
        self._brand = GrowingArray(np.int32)
        self._category_codes = _Codes()
        self._brand_codes = _Codes()
        self._value_codes = _Codes()  # casefolded attribute values, shared by all names
        # casefolded attribute value -> the catalogue's first spelling of it (facet values)
        self._value_spelling: dict[str, str] = {}
        # The leading number of each value code (sorting by an attribute), parsed on demand
        # for the codes added since the last call: codes only grow until a rebuild.
        self._value_numbers = GrowingArray(np.float64)
        # casefolded attribute name -> (slots that carry it, ascending; their value codes)
        self._attributes: dict[str, tuple[GrowingArray, GrowingArray]] = {}
        if products:
            self.append(products)

    @property
    def slots(self) -> int:
        return len(self._price)

    def append(self, products: Sequence[Product]) -> None:
        """Adds the products as the next slots, in order."""
        first = self.slots
        self._price.append([p.price for p in products])
        self._in_stock.append([p.in_stock for p in products])
        self._listed.append([_listed_seconds(p.listed_at) for p in products])
        self._category.append([self._category_codes.code(p.category) for p in products])
        self._brand.append([self._brand_codes.code(p.brand) for p in products])
        added: dict[str, tuple[list[int], list[int]]] = {}
        for offset, product in enumerate(products):
            for raw_value in product.attributes.values():
                self._value_spelling.setdefault(facet_form(raw_value), raw_value)
            for name, value in _folded_attributes(product.attributes).items():
                slots, codes = added.setdefault(name, ([], []))
                slots.append(first + offset)
                codes.append(self._value_codes.code(value))
        for name, (slots, codes) in added.items():
            if name not in self._attributes:
                self._attributes[name] = (GrowingArray(np.int64, initial_capacity=16),
                                          GrowingArray(np.int32, initial_capacity=16))
            slot_column, code_column = self._attributes[name]
            slot_column.append(slots)
            code_column.append(codes)

    def resolve(self, filters: CandidateFilters, where: str = "filters") -> CandidateFilters:
        """`filters` with each category and brand replaced by the catalogue's spellings of it
        (ignoring case and spaces); InvalidArgument naming the first value no product carries."""
        categories = self._known_spellings(filters.categories, self._category_codes, (f"{where}.categories", "category"))
        brands = self._known_spellings(filters.brands, self._brand_codes, (f"{where}.brands", "brand"))
        for name, value in filters.attributes.items():
            self._check_attribute(name, value, f"{where}.attributes[{name!r}]")
        return replace(filters, categories=categories, brands=brands)

    @staticmethod
    def _known_spellings(wanted: Sequence[str], codes: _Codes, field_and_facet: tuple[str, str]) -> tuple[str, ...]:
        field_path, facet = field_and_facet
        resolved: list[str] = []
        for index, value in enumerate(wanted):
            spellings = codes.spellings(value)
            if not spellings:
                raise unknown_value(f"{field_path}[{index}]", facet, value, codes.texts)
            resolved.extend(spellings)
        return tuple(dict.fromkeys(resolved))

    def _check_attribute(self, name: str, value: str, field_path: str) -> None:
        carriers = self._attributes.get(facet_form(name))
        if carriers is None:
            raise unknown_value(field_path, "attribute", name, self._attributes)
        _, value_codes = carriers
        code = self._value_codes.known([facet_form(value)])
        if not code or not np.any(value_codes.values == code[0]):
            known = (self._value_codes.texts[c] for c in np.unique(value_codes.values).tolist())
            raise unknown_value(field_path, f"{facet_form(name)}", value, known)

    def narrow(self, allowed: np.ndarray, filters: CandidateFilters) -> np.ndarray:
        """`allowed` (bool per slot) with every slot that fails a filter set to False, in place."""
        if filters.categories:
            allowed &= _any_of(self._category.values, self._category_codes, filters.categories)
        if filters.brands:
            allowed &= _any_of(self._brand.values, self._brand_codes, filters.brands)
        if filters.price_min is not None:
            allowed &= self._price.values >= filters.price_min
        if filters.price_max is not None:
            allowed &= self._price.values <= filters.price_max
        if filters.in_stock_only:
            allowed &= self._in_stock.values
        for name, value in _wanted_attributes(filters).items():
            carriers = np.zeros(len(allowed), dtype=bool)
            code = self._value_codes.known([value])
            if name in self._attributes and code:
                slots, codes = self._attributes[name]
                carriers[np.take(slots.values, np.flatnonzero(codes.values == code[0]))] = True
            allowed &= carriers
        return allowed


    # --- columns read by facets and sorting (facets.py, sorting.py) --------------------------

    @property
    def prices(self) -> np.ndarray:
        return self._price.values

    @property
    def listed(self) -> np.ndarray:
        """Listing time per slot, seconds since the epoch; -inf when unknown."""
        return self._listed.values

    def coded(self, field_name: str) -> tuple[np.ndarray, list[str]]:
        """("category" or "brand") the code per slot and the text of each code."""
        codes = self._category_codes if field_name == "category" else self._brand_codes
        column = self._category if field_name == "category" else self._brand
        return column.values, codes.texts

    def attribute_names(self) -> list[str]:
        return list(self._attributes)

    def attribute(self, name: str) -> tuple[np.ndarray, np.ndarray, list[str]] | None:
        """The slots that carry attribute `name` (facet form), their value codes, and the
        catalogue's spelling of each value code; None when no product carries it."""
        carriers = self._attributes.get(facet_form(name))
        if carriers is None:
            return None
        slots, codes = carriers
        return slots.values, codes.values, [self._value_spelling.get(t, t) for t in self._value_codes.texts]


    def value_numbers(self, parse) -> np.ndarray:
        """`parse(text)` of every attribute value code, by code (nan: no number)."""
        known = len(self._value_numbers)
        if known < len(self._value_codes):
            self._value_numbers.append([parse(text) for text in self._value_codes.texts[known:]])
        return self._value_numbers.values


def _listed_seconds(listed_at: str) -> float:
    if not listed_at:
        return float("-inf")
    try:
        return datetime.fromisoformat(listed_at).timestamp()
    except ValueError:  # validated on the way in; an odd stored value sorts as unknown
        return float("-inf")


# Up to this many wanted codes, comparing the column with each is fastest (0.3 ms per code at
# 1M slots); above it, one table lookup per slot (1.4 ms). np.isin took 5.5 ms for one code.
_COMPARISONS_UP_TO = 4


def _any_of(column: np.ndarray, codes: _Codes, wanted: Iterable[str]) -> np.ndarray:
    """bool per slot: its column holds the code of one of the `wanted` texts."""
    wanted_codes = codes.known(wanted)
    if len(wanted_codes) <= _COMPARISONS_UP_TO:
        found = np.zeros(len(column), dtype=bool)
        for code in wanted_codes:
            found |= column == code
        return found
    table = np.zeros(len(codes), dtype=bool)
    table[wanted_codes] = True
    return np.take(table, column)

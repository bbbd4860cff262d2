"""One Retrieve, start to end: the merchandising rules in force for the request, the candidate
query its seed asks for (retriever.py), an explicit sort, facet counts and pins.

The matching set is what facets count and what a sort orders: for a text query the candidates
returned (the fused lexical and dense lists under the filters, at most `limit`), for browsing
every product that passes the filters, for similar items and "for this user" the candidates.
Rules act before anything is counted: hidden products are never candidates, pinned products are
taken out of the candidates and returned apart (the gateway places them), synonyms widen the
BM25 query, and boosts and burials are marked on the candidates for ranking to apply.

Facet counts of a field the request filters on are disjunctive: counted over the matching set
with that one filter left out (for a text query, the candidates of the same query under the
other filters: one more candidate query per such facet, the query vector coming from the cache).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from services.common.tracing import tracer
from services.retrieval.catalog import Product
from services.retrieval.facets import FacetCounts, FacetSpec, count_facet
from services.retrieval.filters import CandidateFilters, matches
from services.retrieval.retriever import Candidate, CatalogIndex, RetrievalResult, TextQueryOptions
from services.retrieval.rules import RequestEffects, RuleSet
from services.retrieval.sorting import SortSpec, sorted_slots

SIMILAR, TEXT, PERSONAL, BROWSE = "similar", "text", "personal", "browse"
_tracer = tracer(__name__)


@dataclass(frozen=True)
class RetrieveQuery:
    """A Retrieve request in domain terms (servicer.py builds it)."""

    seed: str  # SIMILAR, TEXT, PERSONAL or BROWSE
    filters: CandidateFilters
    limit: int
    text: str = ""
    product_id: str = ""
    options: TextQueryOptions = TextQueryOptions()
    history: Sequence[str] = ()
    exclude: Sequence[str] = ()
    preferred: Sequence[str] = ()
    facets: tuple[FacetSpec, ...] = ()
    sort: SortSpec = SortSpec()


@dataclass(frozen=True)
class RuleMarks:
    boost: float = 0.0
    buried: bool = False
    rule_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class PinnedProduct:
    product: Product
    position: int
    rule_id: str


@dataclass(frozen=True)
class Matched:
    result: RetrievalResult
    facets: tuple[FacetCounts, ...]
    pinned: tuple[PinnedProduct, ...]
    marks: dict[str, RuleMarks]  # product id -> what rules did to it (only those touched)
    applied_rule_ids: tuple[str, ...]
    rules_version: int


async def answer(index: CatalogIndex, rules: RuleSet, query: RetrieveQuery) -> Matched:
    effects = rules.effects(query.text if query.seed == TEXT else "", query.filters.categories)
    pins = [pin for pin in effects.pins if _pinnable(index, pin.product_id, query.filters, effects)]
    exclude = list(dict.fromkeys([*query.exclude, *sorted(effects.hidden), *(p.product_id for p in pins)]))
    options = replace(query.options, expansions=" ".join(effects.expansions))
    result = await _candidates(index, replace(query, exclude=exclude, options=options))
    slots = _slots(index, result.candidates)
    if not query.sort.is_relevance:
        index.metrics.sorted(query.sort.key)
        order = sorted_slots(index.slots.filters, query.sort, slots)
        position = {slot: n for n, slot in enumerate(order.tolist())}
        result = replace(result, candidates=sorted(result.candidates, key=lambda c: position[index.slots.slot_of[c.product.id]]))
    pinned = tuple(PinnedProduct(index.slots.products[index.slots.slot_of[p.product_id]], p.position, p.rule_id) for p in pins)
    facets = ()
    if query.facets:
        with _tracer.start_as_current_span("retrieval.facets") as span:
            span.set_attribute("shelfwise.facets", [spec.field for spec in query.facets])
            # Pinned products are shown with the matching set, so they are counted with it.
            if query.seed == BROWSE:  # the whole matching set, once for every facet that keeps it
                slots = np.flatnonzero(index.slots.allowed(query.filters, exclude))
            shown = (slots, _slots(index, pinned))
            facets = tuple([await _facet(index, query, spec, shown, exclude) for spec in query.facets])
    marks = _marks(result.candidates, effects)
    applied = set(effects.synonym_rules) | {pin.rule_id for pin in pins} | _hid(index, query, effects)
    applied |= {rule for mark in marks.values() for rule in mark.rule_ids}
    actions = {rule.id: rule.action for rule in rules.rules}
    for rule_id in applied:
        index.metrics.rule_applied(actions[rule_id])
    return Matched(result, facets, pinned, marks, tuple(sorted(applied)), rules.version)


def _pinnable(index: CatalogIndex, product_id: str, filters: CandidateFilters, effects: RequestEffects) -> bool:
    """A pin shows its product only where the product exists and passes the request's filters."""
    slot = index.slots.slot_of.get(product_id)
    return slot is not None and product_id not in effects.hidden and matches(index.slots.products[slot], filters)


async def _candidates(index: CatalogIndex, query: RetrieveQuery) -> RetrievalResult:
    if query.seed == SIMILAR:
        return await index.similar(query.product_id, query.filters, query.limit, query.history, query.exclude)
    if query.seed == TEXT:
        return await index.retrieve(query.text, query.filters, query.limit, query.history, query.exclude, query.options)
    if query.seed == PERSONAL:
        return await index.personal(query.history, query.filters, query.limit, query.exclude)
    if query.sort.is_relevance:
        return index.browse(query.filters, query.limit, query.exclude, query.preferred)
    # A sorted browse orders every matching product, then takes the limit.
    allowed = index.slots.allowed(query.filters, query.exclude)
    order = sorted_slots(index.slots.filters, query.sort, np.flatnonzero(allowed), query.limit)
    candidates = [Candidate(index.slots.products[slot], 0.0, 0.0, 0.0, 0, 0) for slot in order.tolist()]
    return RetrievalResult(candidates, int(np.count_nonzero(allowed)))


def _slots(index: CatalogIndex, candidates: Sequence[Candidate]) -> np.ndarray:
    slot_of = index.slots.slot_of
    return np.fromiter((slot_of[c.product.id] for c in candidates), dtype=np.int64, count=len(candidates))


async def _facet(
    index: CatalogIndex, query: RetrieveQuery, spec: FacetSpec, shown: tuple[np.ndarray, np.ndarray],
    exclude: Sequence[str],
) -> FacetCounts:
    """One facet's counts. `shown`: the slots of the matching set and of the pinned products."""
    slots, pinned_slots = shown
    columns = index.slots.filters
    disjunctive = spec.filtered_by(query.filters) and query.seed in (TEXT, BROWSE)
    index.metrics.facet("attribute" if spec.attribute else spec.field, disjunctive)
    filters = spec.without_own_filter(query.filters) if disjunctive else query.filters
    if disjunctive and query.seed == BROWSE:
        slots = np.flatnonzero(index.slots.allowed(filters, exclude))
    elif disjunctive:
        relaxed = await index.text_candidates(query.text, filters, query.limit, query.options)
        excluded = set(exclude)
        slots = _slots(index, [c for c in relaxed.candidates if c.product.id not in excluded])
    return count_facet(columns, spec, np.union1d(slots, pinned_slots), query.filters, disjunctive)


def _marks(candidates: Sequence[Candidate], effects: RequestEffects) -> dict[str, RuleMarks]:
    if not (effects.boosts or effects.buried or effects.attribute_boosts):
        return {}
    marks = {}
    for candidate in candidates:
        product = candidate.product
        boost, rule_ids = 0.0, []
        for value, rule_id in effects.boosts.get(product.id, ()):
            boost, rule_ids = boost + value, [*rule_ids, rule_id]
        if effects.attribute_boosts:
            folded = {" ".join(k.casefold().split()): " ".join(v.casefold().split()) for k, v in product.attributes.items()}
            for name, value, amount, rule_id in effects.attribute_boosts:
                if folded.get(name) == value:
                    boost, rule_ids = boost + amount, [*rule_ids, rule_id]
        buried = effects.buried.get(product.id)
        if buried:
            rule_ids.append(buried)
        if rule_ids:
            marks[product.id] = RuleMarks(boost, buried is not None, tuple(rule_ids))
    return marks


def _hid(index: CatalogIndex, query: RetrieveQuery, effects: RequestEffects) -> set[str]:
    """HIDE rules that held back a product the request's filters would otherwise let through:
    those changed the answer."""
    applied = set()
    for product_id, rule_id in effects.hidden.items():
        slot = index.slots.slot_of.get(product_id)
        if slot is not None and matches(index.slots.products[slot], query.filters):
            applied.add(rule_id)
    return applied

"""Protobuf <-> domain for what Retrieve and the rule RPCs carry besides products: facet
requests and counts, the sort, and merchandising rules. Part of the gRPC adapter (servicer.py),
kept apart so that the servicer stays one screen of request handling."""

from __future__ import annotations

from shelfwise.common.v1 import common_pb2
from shelfwise.retrieval.v1 import retrieval_pb2

from services.common.errors import InvalidArgument
from services.retrieval.facets import MAX_FACETS, FacetCounts, FacetSpec, facet_spec
from services.retrieval.filters import FilterColumns
from services.retrieval.rules import ACTIONS, Rule
from services.retrieval.sorting import (
    ATTRIBUTE_ASCENDING,
    ATTRIBUTE_DESCENDING,
    NEWEST,
    PRICE_ASCENDING,
    PRICE_DESCENDING,
    RELEVANCE,
    SortSpec,
    sort_spec,
)

SORT_KEYS = {
    common_pb2.SORT_KEY_UNSPECIFIED: RELEVANCE,
    common_pb2.SORT_KEY_RELEVANCE: RELEVANCE,
    common_pb2.SORT_KEY_PRICE_ASCENDING: PRICE_ASCENDING,
    common_pb2.SORT_KEY_PRICE_DESCENDING: PRICE_DESCENDING,
    common_pb2.SORT_KEY_NEWEST: NEWEST,
    common_pb2.SORT_KEY_ATTRIBUTE_ASCENDING: ATTRIBUTE_ASCENDING,
    common_pb2.SORT_KEY_ATTRIBUTE_DESCENDING: ATTRIBUTE_DESCENDING,
}
RULE_ACTIONS = {
    retrieval_pb2.RULE_ACTION_PIN: "pin",
    retrieval_pb2.RULE_ACTION_HIDE: "hide",
    retrieval_pb2.RULE_ACTION_BURY: "bury",
    retrieval_pb2.RULE_ACTION_BOOST: "boost",
    retrieval_pb2.RULE_ACTION_SYNONYM: "synonym",
}
assert set(RULE_ACTIONS.values()) == set(ACTIONS)
ACTION_CODES = {name: code for code, name in RULE_ACTIONS.items()}


def facets_from_pb(requests, columns: FilterColumns, where: str = "facets") -> tuple[FacetSpec, ...]:
    if len(requests) > MAX_FACETS:
        raise InvalidArgument(where, f"must list at most {MAX_FACETS} facets, got {len(requests)}")
    specs: list[FacetSpec] = []
    seen: dict[str, int] = {}
    for index, request in enumerate(requests):
        spec = facet_spec(
            request.field.strip(), request.max_values if request.HasField("max_values") else None,
            request.price_bounds, f"{where}[{index}]", columns,
        )
        key = spec.attribute or spec.field
        if key in seen:
            raise InvalidArgument(f"{where}[{index}].field", f"repeats facets[{seen[key]}] ({request.field!r})")
        seen[key] = index
        specs.append(spec)
    return tuple(specs)


def facet_to_pb(facet: FacetCounts) -> common_pb2.Facet:
    message = common_pb2.Facet(
        field=facet.field, products_with_value=facet.products_with_value, distinct_values=facet.distinct_values,
        disjunctive=facet.disjunctive, min_price=facet.min_price, max_price=facet.max_price,
    )
    for value in facet.values:
        entry = message.values.add(value=value.value, count=value.count, selected=value.selected)
        if value.low is not None:
            entry.min = value.low
        if value.high is not None:
            entry.max = value.high
    return message


def sort_from_pb(message: common_pb2.Sort, columns: FilterColumns) -> SortSpec:
    if message.key not in SORT_KEYS:
        raise InvalidArgument("sort.key", f"must be a SortKey ({', '.join(common_pb2.SortKey.keys())}), got {message.key}")
    return sort_spec(SORT_KEYS[message.key], message.attribute, columns)


def rule_from_pb(message: retrieval_pb2.Rule) -> Rule:
    if not message.id:
        raise InvalidArgument("rule.id", "is required")
    if message.action not in RULE_ACTIONS:
        allowed = ", ".join(retrieval_pb2.RuleAction.Name(code) for code in RULE_ACTIONS)
        raise InvalidArgument("rule.action", f"must be one of {allowed}, got {message.action}")
    return Rule(
        id=message.id, action=RULE_ACTIONS[message.action], query=message.query.strip(), category=message.category.strip(),
        product_ids=tuple(message.product_ids), position=message.position, attribute=message.attribute.strip(),
        value=message.value.strip(), boost=message.boost, terms=tuple(t.strip() for t in message.terms),
        one_way=message.one_way, note=message.note,
    )


def rule_to_pb(rule: Rule) -> retrieval_pb2.Rule:
    return retrieval_pb2.Rule(
        id=rule.id, action=ACTION_CODES[rule.action], query=rule.query, category=rule.category,
        product_ids=rule.product_ids, position=rule.position, attribute=rule.attribute, value=rule.value,
        boost=rule.boost, terms=rule.terms, one_way=rule.one_way, note=rule.note, version=rule.version,
    )

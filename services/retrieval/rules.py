"""Merchandising rules: what a merchandiser says about a query or a category without retraining
anything (pin a product at a position, hide it, bury it, boost it or an attribute value, treat
words as synonyms), validated, checked for conflicts, and matched to a request.

A rule's conditions (`query`, `category`) must all hold for it to apply; a rule without
conditions applies to every request. Conditions compare in facet form (case and runs of spaces
ignored): `query` against the search text, `category` against the request's category filter.
Two rules "overlap" when some request could meet both: for each condition, one of them leaves it
open or both name the same value. Overlapping rules that contradict each other are refused
(`conflict`), naming both: two pins at one position, one product pinned at two positions, a
product both hidden and pinned, boosted or buried, a product both boosted and buried.

`RuleSet` is an immutable snapshot (rule_store.py swaps a new one in when the store's version
moves); `RuleSet.effects` says what its rules do to one request.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from services.common.errors import InvalidArgument
from services.common.text import facet_form, normalize

PIN, HIDE, BURY, BOOST, SYNONYM = "pin", "hide", "bury", "boost", "synonym"
ACTIONS = (PIN, HIDE, BURY, BOOST, SYNONYM)
MAX_PRODUCTS = 100
MAX_POSITION = 100
MAX_BOOST = 5.0
MAX_TERMS = 20
MAX_TEXT = 200
MAX_TERM = 100
MAX_NOTE = 500
_ID = re.compile(r"^[a-z0-9_-]{1,64}$")
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Rule:
    id: str
    action: str
    query: str = ""
    category: str = ""
    product_ids: tuple[str, ...] = ()
    position: int = 0
    attribute: str = ""
    value: str = ""
    boost: float = 0.0
    terms: tuple[str, ...] = ()
    one_way: bool = False
    note: str = ""
    version: int = 0

    def overlaps(self, other: "Rule") -> bool:
        return all(
            not mine or not theirs or facet_form(mine) == facet_form(theirs)
            for mine, theirs in ((self.query, other.query), (self.category, other.category))
        )

    def scope(self) -> str:
        parts = [f"query {self.query!r}"] if self.query else []
        parts += [f"category {self.category!r}"] if self.category else []
        return " and ".join(parts) or "every request"


def validate_rule(rule: Rule, where: str = "rule") -> Rule:
    """The rule, or InvalidArgument naming the first bad field and what to write instead."""
    if not _ID.match(rule.id):
        raise InvalidArgument(f"{where}.id", f"must be 1-64 characters of a-z, 0-9, '-' and '_', got {rule.id[:70]!r}")
    if rule.action not in ACTIONS:
        raise InvalidArgument(f"{where}.action", f"must be one of {', '.join(a.upper() for a in ACTIONS)}")
    for name in ("query", "category", "attribute", "value"):
        if len(getattr(rule, name)) > MAX_TEXT:
            raise InvalidArgument(f"{where}.{name}", f"must be at most {MAX_TEXT} characters")
    if len(rule.note) > MAX_NOTE:
        raise InvalidArgument(f"{where}.note", f"must be at most {MAX_NOTE} characters")
    _check_action_fields(rule, where)
    if rule.action == PIN:
        if len(rule.product_ids) != 1:
            raise InvalidArgument(f"{where}.product_ids", f"a PIN names exactly one product, got {len(rule.product_ids)}")
        if not 1 <= rule.position <= MAX_POSITION:
            raise InvalidArgument(f"{where}.position", f"must be between 1 and {MAX_POSITION}, got {rule.position}")
    if rule.action in (HIDE, BURY) or (rule.action == BOOST and not rule.attribute):
        if not 1 <= len(rule.product_ids) <= MAX_PRODUCTS:
            raise InvalidArgument(f"{where}.product_ids", f"must name 1-{MAX_PRODUCTS} products, got {len(rule.product_ids)}")
    if rule.action == BOOST:
        if rule.attribute and (rule.product_ids or not rule.value):
            raise InvalidArgument(f"{where}.value", "a BOOST by attribute needs a value and no product_ids")
        if not math.isfinite(rule.boost) or rule.boost == 0 or abs(rule.boost) > MAX_BOOST:
            raise InvalidArgument(f"{where}.boost", f"must be non-zero, between -{MAX_BOOST:g} and {MAX_BOOST:g}, got {rule.boost}")
    if rule.action == SYNONYM:
        if rule.query or rule.category:
            raise InvalidArgument(f"{where}.query", "a SYNONYM takes no conditions: leave query and category empty")
        terms = [normalize(term) for term in rule.terms]
        if not 2 <= len(terms) <= MAX_TERMS or any(not 1 <= len(t) <= MAX_TERM for t in terms):
            raise InvalidArgument(f"{where}.terms", f"must list 2-{MAX_TERMS} terms of 1-{MAX_TERM} characters")
        if len(set(terms)) != len(terms):
            raise InvalidArgument(f"{where}.terms", "must not repeat a term")
    for index, product_id in enumerate(rule.product_ids):
        if not 1 <= len(product_id) <= 128:
            raise InvalidArgument(f"{where}.product_ids[{index}]", "must be 1-128 characters")
    return rule


def _check_action_fields(rule: Rule, where: str) -> None:
    """Fields that belong to another action are refused rather than silently ignored."""
    used = {
        "position": rule.position != 0, "attribute": bool(rule.attribute), "value": bool(rule.value),
        "boost": rule.boost != 0, "terms": bool(rule.terms), "one_way": rule.one_way,
        "product_ids": bool(rule.product_ids),
    }
    allowed = {
        PIN: {"position", "product_ids"}, HIDE: {"product_ids"}, BURY: {"product_ids"},
        BOOST: {"attribute", "value", "boost", "product_ids"}, SYNONYM: {"terms", "one_way"},
    }[rule.action]
    for name, is_set in used.items():
        if is_set and name not in allowed:
            raise InvalidArgument(f"{where}.{name}", f"does not apply to a {rule.action.upper()} rule; leave it unset")


def conflict(rule: Rule, others: list[Rule]) -> str | None:
    """Why `rule` cannot stand next to the rules in force (`others`, its own id left out), or None."""
    for other in others:
        if other.id == rule.id or not rule.overlaps(other):
            continue
        reason = _contradiction(rule, other) or _contradiction(other, rule)
        if reason:
            return f"conflicts with rule {other.id!r} ({other.scope()}): {reason}"
    return None


def _contradiction(a: Rule, b: Rule) -> str | None:
    shared = sorted(set(a.product_ids) & set(b.product_ids))
    if a.action == PIN and b.action == PIN:
        if a.position == b.position:
            return f"both pin a product at position {a.position}"
        if shared:
            return f"both pin {shared[0]!r}, at positions {a.position} and {b.position}"
    if a.action == HIDE and b.action in (PIN, BOOST, BURY) and shared:
        return f"{shared[0]!r} would be hidden and {b.action}ed"
    if a.action == BOOST and b.action == BURY and shared:
        return f"{shared[0]!r} would be boosted and buried"
    return None


@dataclass(frozen=True)
class Pin:
    position: int
    product_id: str
    rule_id: str


@dataclass
class RequestEffects:
    """What the rules in force do to one request."""

    hidden: dict[str, str] = field(default_factory=dict)  # product id -> rule id
    pins: list[Pin] = field(default_factory=list)
    buried: dict[str, str] = field(default_factory=dict)  # product id -> rule id
    boosts: dict[str, list[tuple[float, str]]] = field(default_factory=dict)  # product id -> (boost, rule id)
    attribute_boosts: list[tuple[str, str, float, str]] = field(default_factory=list)  # name, value, boost, rule
    expansions: list[str] = field(default_factory=list)  # synonym terms to search too
    # Rules whose condition holds; a rule is "applied" when it changed the answer (the caller
    # adds the ids of those that did, see matching.py).
    applied: set[str] = field(default_factory=set)
    synonym_rules: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.hidden or self.pins or self.buried or self.boosts or self.attribute_boosts or self.expansions)


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()
    version: int = 0

    def effects(self, query_text: str, categories: tuple[str, ...] = ()) -> RequestEffects:
        """The effects of the rules whose conditions this request meets. `query_text`: the
        search text ("" when browsing or recommending); `categories`: its category filter."""
        effects = RequestEffects()
        if not self.rules:
            return effects
        query = facet_form(query_text)
        category_forms = {facet_form(c) for c in categories}
        for rule in self.rules:
            if rule.action == SYNONYM:
                if query and (added := synonyms_for(query, rule)):
                    effects.expansions.extend(added)
                    effects.synonym_rules.append(rule.id)
                continue
            if rule.query and facet_form(rule.query) != query:
                continue
            if rule.category and facet_form(rule.category) not in category_forms:
                continue
            if rule.action == HIDE:
                effects.hidden.update((p, rule.id) for p in rule.product_ids)
            elif rule.action == PIN:
                effects.pins.append(Pin(rule.position, rule.product_ids[0], rule.id))
            elif rule.action == BURY:
                effects.buried.update((p, rule.id) for p in rule.product_ids)
            elif rule.attribute:
                effects.attribute_boosts.append((facet_form(rule.attribute), facet_form(rule.value), rule.boost, rule.id))
            else:
                for product_id in rule.product_ids:
                    effects.boosts.setdefault(product_id, []).append((rule.boost, rule.id))
        effects.pins.sort(key=lambda pin: pin.position)
        return effects


def synonyms_for(query: str, rule: Rule) -> list[str]:
    """The terms a query (facet form) also searches under a SYNONYM rule: the rule's other
    terms when the query holds one of them (whole words; Chinese terms anywhere), or for a
    one-way rule only when it holds the first."""
    terms = [normalize(term) for term in rule.terms]
    sources = terms[:1] if rule.one_way else terms
    held = [term for term in sources if _holds(query, term)]
    if not held:
        return []
    return [term for term in terms if term not in held and (not rule.one_way or term != terms[0])]


def _holds(query: str, term: str) -> bool:
    if _CJK.search(term):
        return term in query
    return f" {term} " in f" {query} "

"""Merchandising rules as a domain (services/retrieval/rules.py): validation that names the
field, conflicts between overlapping rules, and what the rules in force do to one request."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidArgument
from services.retrieval.rules import BOOST, BURY, HIDE, PIN, SYNONYM, Rule, RuleSet, conflict, validate_rule


@pytest.mark.parametrize("rule, field", [
    (Rule("Bad Id", PIN, product_ids=("p",), position=1), "rule.id"),
    (Rule("r", "promote"), "rule.action"),
    (Rule("r", PIN, product_ids=("p", "q"), position=1), "rule.product_ids"),
    (Rule("r", PIN, product_ids=("p",), position=0), "rule.position"),
    (Rule("r", HIDE), "rule.product_ids"),
    (Rule("r", HIDE, product_ids=("p",), position=3), "rule.position"),
    (Rule("r", BOOST, product_ids=("p",), boost=0.0), "rule.boost"),
    (Rule("r", BOOST, product_ids=("p",), boost=9.0), "rule.boost"),
    (Rule("r", BOOST, attribute="color", boost=1.0), "rule.value"),
    (Rule("r", SYNONYM, terms=("couch",)), "rule.terms"),
    (Rule("r", SYNONYM, terms=("couch", "Couch")), "rule.terms"),
    (Rule("r", SYNONYM, query="sofa", terms=("couch", "sofa")), "rule.query"),
])
def test_invalid_rules_name_the_field(rule, field):
    with pytest.raises(InvalidArgument) as raised:
        validate_rule(rule)
    assert raised.value.field == field


def test_conflicts_between_overlapping_rules_are_found_and_name_the_other_rule():
    pin = Rule("pin-2", PIN, query="gift for dad", product_ids=("p",), position=2)
    assert "pin-2" in conflict(Rule("x", PIN, query="Gift  for DAD", product_ids=("q",), position=2), [pin])
    assert "pin-2" in conflict(Rule("x", PIN, product_ids=("p",), position=5), [pin])  # no condition overlaps all
    assert "pin-2" in conflict(Rule("x", HIDE, category="Tools", product_ids=("p",)), [pin])
    assert conflict(Rule("x", PIN, query="gift for mum", product_ids=("q",), position=2), [pin]) is None
    assert conflict(Rule("pin-2", PIN, query="gift for dad", product_ids=("q",), position=2), [pin]) is None  # itself
    boost = Rule("b", BOOST, product_ids=("p",), boost=1.0)
    assert "'b'" in conflict(Rule("x", BURY, product_ids=("p",)), [boost])


def test_effects_of_the_rules_a_request_meets():
    rules = RuleSet((
        Rule("hide-all", HIDE, product_ids=("gone",)),
        Rule("pin-dad", PIN, query="gift for dad", product_ids=("watch",), position=3),
        Rule("bury-tools", BURY, category="Tools", product_ids=("saw",)),
        Rule("boost-red", BOOST, attribute="Color", value="Red", boost=1.5),
        Rule("sofa", SYNONYM, terms=("couch", "sofa", "settee")),
        Rule("tv", SYNONYM, terms=("tv", "television"), one_way=True),
        Rule("zh", SYNONYM, terms=("沙发", "sofa")),
    ))
    effects = rules.effects("Gift for  Dad", ("tools",))
    assert effects.hidden == {"gone": "hide-all"}
    assert [(p.position, p.product_id) for p in effects.pins] == [(3, "watch")]
    assert effects.buried == {"saw": "bury-tools"}
    assert effects.attribute_boosts == [("color", "red", 1.5, "boost-red")]
    assert effects.expansions == []
    assert rules.effects("red couch").expansions == ["sofa", "settee"]
    assert rules.effects("tv stand").expansions == ["television"]
    assert rules.effects("television stand").expansions == []  # one way only
    assert rules.effects("couchette").expansions == []  # whole words
    assert rules.effects("红色沙发").expansions == ["sofa"]  # Chinese terms match inside the text
    assert rules.effects("", ("garden",)).pins == []

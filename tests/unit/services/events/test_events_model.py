"""Unit tests of services.events.model: the validation rules applied to impressions and
interactions on ingestion."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from services.common.errors import InvalidArgument
from services.events.model import (
    MAX_FEATURES_PER_PRODUCT,
    MAX_PRODUCTS_PER_IMPRESSION,
    Impression,
    Interaction,
    validate_impression,
    validate_interaction,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)


def impression(**overrides) -> Impression:
    event = Impression(
        event_id="impression-r1",
        request_id="r1",
        surface="search",
        product_ids=("a", "b", "c"),
        first_position=1,
        occurred_at=NOW - timedelta(seconds=5),
        user_id="u1",
        session_id="s1",
        query="red shoes",
        model_version="ctr_head/1",
    )
    return replace(event, **overrides)


def interaction(**overrides) -> Interaction:
    event = Interaction(
        event_id="click-1",
        type="click",
        request_id="r1",
        product_id="a",
        position=1,
        occurred_at=NOW - timedelta(seconds=1),
        user_id="u1",
        session_id="s1",
    )
    return replace(event, **overrides)


def rejected_field(validate, event) -> str:
    with pytest.raises(InvalidArgument) as caught:
        validate(event, "impressions[0]", now=NOW)
    assert caught.value.message.startswith(caught.value.field + ": ")
    return caught.value.field


# --- impressions -----------------------------------------------------------------------------


def test_valid_impression_is_returned_unchanged() -> None:
    event = impression()
    assert validate_impression(event, "impressions[0]", now=NOW) is event


def test_impression_with_only_required_fields_is_valid() -> None:
    event = Impression("e", "r", "recommend", ("a",), 11, NOW)
    assert validate_impression(event, "impressions[0]", now=NOW) is event


def test_impression_validates_against_real_clock_by_default() -> None:
    event = impression(occurred_at=datetime.now(timezone.utc))
    assert validate_impression(event, "impressions[0]") is event


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"event_id": ""}, "impressions[0].event_id"),
        ({"event_id": "e" * 129}, "impressions[0].event_id"),
        ({"request_id": ""}, "impressions[0].request_id"),
        ({"request_id": "r" * 129}, "impressions[0].request_id"),
        ({"user_id": "u" * 129}, "impressions[0].user_id"),
        ({"session_id": "s" * 129}, "impressions[0].session_id"),
        ({"model_version": "m" * 129}, "impressions[0].model_version"),
        ({"experiment_arm": "x" * 129}, "impressions[0].experiment_arm"),
        ({"query": "q" * 2_001}, "impressions[0].query"),
        ({"surface": "home"}, "impressions[0].surface"),
        ({"surface": ""}, "impressions[0].surface"),
        ({"surface": "SEARCH"}, "impressions[0].surface"),
        ({"product_ids": tuple(f"p{i}" for i in range(MAX_PRODUCTS_PER_IMPRESSION + 1))}, "impressions[0].product_ids"),
        ({"product_ids": ("a", "")}, "impressions[0].product_ids[1]"),
        ({"product_ids": ("a", "b", "p" * 129)}, "impressions[0].product_ids[2]"),
        ({"first_position": 0}, "impressions[0].first_position"),
        ({"first_position": -3}, "impressions[0].first_position"),
        ({"occurred_at": NOW + timedelta(days=1, seconds=1)}, "impressions[0].occurred_at"),
    ],
)
def test_impression_rejects_bad_field(overrides, field) -> None:
    assert rejected_field(validate_impression, impression(**overrides)) == field


def test_impression_accepts_128_character_ids_and_the_max_product_count() -> None:
    event = impression(
        event_id="e" * 128,
        request_id="r" * 128,
        product_ids=tuple(f"p{i}" for i in range(MAX_PRODUCTS_PER_IMPRESSION)),
        query="q" * 2_000,
    )
    assert validate_impression(event, "impressions[0]", now=NOW) is event


def test_impression_accepts_clock_skew_up_to_one_day() -> None:
    event = impression(occurred_at=NOW + timedelta(days=1))
    assert validate_impression(event, "impressions[0]", now=NOW) is event


def test_impression_accepts_old_events() -> None:
    event = impression(occurred_at=NOW - timedelta(days=365))
    assert validate_impression(event, "impressions[0]", now=NOW) is event


# --- logged features and interleaving arms ---------------------------------------------------


def test_impression_with_features_and_arms_for_every_product_is_valid() -> None:
    event = impression(
        features=({"bm25": 1.5}, {}, {f"f{i}": float(i) for i in range(MAX_FEATURES_PER_PRODUCT)}),
        interleaving_arms=("control", "treatment", "a" * 64),
    )
    assert validate_impression(event, "impressions[0]", now=NOW) is event


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"features": ({"bm25": 1.0},)}, "impressions[0].features"),
        ({"features": ({}, {}, {}, {})}, "impressions[0].features"),
        (
            {"features": ({}, {f"f{i}": 1.0 for i in range(MAX_FEATURES_PER_PRODUCT + 1)}, {})},
            "impressions[0].features[1]",
        ),
        ({"features": ({}, {}, {"": 1.0})}, "impressions[0].features[2].values"),
        ({"features": ({}, {}, {"f" * 65: 1.0})}, "impressions[0].features[2].values"),
        ({"features": ({"bm25": float("nan")}, {}, {})}, "impressions[0].features[0].values['bm25']"),
        ({"features": ({"bm25": float("inf")}, {}, {})}, "impressions[0].features[0].values['bm25']"),
        ({"interleaving_arms": ("a", "b")}, "impressions[0].interleaving_arms"),
        ({"interleaving_arms": ("a", "b", "c", "d")}, "impressions[0].interleaving_arms"),
        ({"interleaving_arms": ("a", "", "c")}, "impressions[0].interleaving_arms[1]"),
        ({"interleaving_arms": ("a", "b", "c" * 65)}, "impressions[0].interleaving_arms[2]"),
    ],
)
def test_impression_rejects_features_or_arms_that_break_a_rule(overrides, field) -> None:
    assert rejected_field(validate_impression, impression(**overrides)) == field


def test_misaligned_features_error_states_the_product_count() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_impression(impression(features=({},)), "impressions[0]", now=NOW)
    assert "one entry per product (3), got 1" in caught.value.rule


# --- interactions ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["click", "add_to_cart", "purchase"])
def test_valid_interaction_of_each_type_is_returned(kind) -> None:
    event = interaction(type=kind, quantity=2, value=19.99)
    assert validate_interaction(event, "interactions[0]", now=NOW) is event


def test_interaction_with_zero_value_is_valid() -> None:
    event = interaction(value=0.0)
    assert validate_interaction(event, "interactions[0]", now=NOW) is event


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"event_id": ""}, "interactions[0].event_id"),
        ({"event_id": "e" * 129}, "interactions[0].event_id"),
        ({"request_id": ""}, "interactions[0].request_id"),
        ({"request_id": "r" * 129}, "interactions[0].request_id"),
        ({"product_id": ""}, "interactions[0].product_id"),
        ({"product_id": "p" * 129}, "interactions[0].product_id"),
        ({"user_id": "u" * 129}, "interactions[0].user_id"),
        ({"session_id": "s" * 129}, "interactions[0].session_id"),
        ({"type": "view"}, "interactions[0].type"),
        ({"type": ""}, "interactions[0].type"),
        ({"type": "Click"}, "interactions[0].type"),
        ({"position": 0}, "interactions[0].position"),
        ({"position": -1}, "interactions[0].position"),
        ({"quantity": 0}, "interactions[0].quantity"),
        ({"quantity": -2}, "interactions[0].quantity"),
        ({"value": -0.01}, "interactions[0].value"),
        ({"value": float("nan")}, "interactions[0].value"),
        ({"value": float("inf")}, "interactions[0].value"),
        ({"value": float("-inf")}, "interactions[0].value"),
        ({"occurred_at": NOW + timedelta(days=2)}, "interactions[0].occurred_at"),
    ],
)
def test_interaction_rejects_bad_field(overrides, field) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_interaction(interaction(**overrides), "interactions[0]", now=NOW)
    assert caught.value.field == field
    assert caught.value.message.startswith(field + ": ")


def test_interaction_error_for_nan_value_shows_the_value() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_interaction(interaction(value=float("nan")), "interactions[0]", now=NOW)
    assert "nan" in caught.value.rule


def test_interaction_future_limit_is_exactly_one_day() -> None:
    assert validate_interaction(interaction(occurred_at=NOW + timedelta(days=1)), "i", now=NOW)
    with pytest.raises(InvalidArgument):
        validate_interaction(interaction(occurred_at=NOW + timedelta(days=1, microseconds=1)), "i", now=NOW)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"propensities": (0.5,)}, "impressions[0].propensities"),  # one per product
        ({"propensities": (0.5, 0.0)}, "impressions[0].propensities[1]"),
        ({"propensities": (0.5, 1.5)}, "impressions[0].propensities[1]"),
        ({"exploration_pool": (("p1", {}, 0.5), ("p2", {}, 0.5))}, "impressions[0].exploration_pool"),  # not explored
        ({"propensities": (0.5, 0.5), "exploration_pool": (("p1", {}, 0.5),)}, "impressions[0].exploration_pool"),
        ({"propensities": (0.5, 0.5), "exploration_pool": (("p1", {}, 0.5), ("p2", {}, 2.0))},
         "impressions[0].exploration_pool_shown[1]"),
        ({"propensities": (0.5, 0.5), "exploration_pool": (("p1", {}, 0.5), ("p2", {"x": float("nan")}, 0.5))},
         "impressions[0].exploration_pool_features[1].values['x']"),
    ],
)
def test_exploration_fields_that_break_a_rule_are_refused(overrides, field) -> None:
    assert rejected_field(validate_impression, impression(product_ids=("p1", "p2"), **overrides)) == field


def test_an_explored_impression_with_its_pool_is_valid() -> None:
    event = impression(product_ids=("p2", "p1"), propensities=(0.25, 1.0),
                       exploration_pool=(("p1", {"bm25": 1.0}, 1.0), ("p2", {}, 0.25), ("p3", {}, 0.75)))
    assert validate_impression(event, "impressions[0]") is event

"""Behaviour events as the domain sees them, with the validation rules applied on ingestion."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from services.common.errors import InvalidArgument

MAX_ID_CHARS = 128
MAX_BATCH = 1_000
MAX_PRODUCTS_PER_IMPRESSION = 1_000
# Logged ranking features: a CTR head has tens of features, not hundreds; names are short keys.
MAX_FEATURES_PER_PRODUCT = 64
MAX_FEATURE_NAME_CHARS = 64
MAX_ARM_CHARS = 64
MAX_EXPLORATION_POOL = 50
INTERACTION_TYPES = ("click", "add_to_cart", "purchase")
SURFACES = ("search", "recommend")
# What a type or surface the adapter could not name is called ("" when the enum was unset).
UNSPECIFIED = ""


def api_names(prefix: str, values: tuple[str, ...]) -> str:
    """The proto enum names of domain values, as every error lists them: callers write those
    (INTERACTION_TYPE_CLICK), not the names stored (click)."""
    return ", ".join(f"{prefix}_{value.upper()}" for value in values)


def _check_enum(value: str, field: str, allowed: tuple[str, ...], prefix: str) -> None:
    if value == UNSPECIFIED:
        raise InvalidArgument(field, "is required")
    if value not in allowed:
        raise InvalidArgument(field, f"must be one of {api_names(prefix, allowed)}")
# Clients' clocks drift; an event more than a day in the future is a bug, not drift.
MAX_CLOCK_SKEW = timedelta(days=1)


@dataclass(frozen=True)
class Impression:
    event_id: str
    request_id: str
    surface: str
    product_ids: tuple[str, ...]
    first_position: int
    occurred_at: datetime
    user_id: str = ""
    session_id: str = ""
    query: str = ""
    model_version: str = ""
    experiment_arm: str = ""
    # Aligned with product_ids, or empty (not logged): ranking feature name -> value, absent = 0.
    features: tuple[dict[str, float], ...] = ()
    # Aligned with product_ids, or empty (not interleaved): the arm that contributed each product.
    interleaving_arms: tuple[str, ...] = ()
    # Aligned with product_ids, or empty (a deterministic order): under the gateway's exploration
    # sampling, the probability that each product was shown at its position.
    propensities: tuple[float, ...] = ()
    # With propensities: the ranked products the page was drawn from, (product id, features,
    # probability it was shown at all; 0 = not logged).
    exploration_pool: tuple[tuple[str, dict[str, float], float], ...] = ()


@dataclass(frozen=True)
class Interaction:
    event_id: str
    type: str
    request_id: str
    product_id: str
    position: int
    occurred_at: datetime
    user_id: str = ""
    session_id: str = ""
    quantity: int = 1
    value: float = 0.0


def check_storable(value: str, field: str) -> None:
    """PostgreSQL text cannot hold NUL: refuse it here, as bad input, rather than fail the write."""
    if "\x00" in value:
        raise InvalidArgument(field, "must not contain NUL characters")


def _check_id(value: str, field: str, required: bool = True) -> None:
    if required and not value:
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_ID_CHARS:
        raise InvalidArgument(field, f"must be at most {MAX_ID_CHARS} characters")
    check_storable(value, field)


def _check_time(value: datetime, field: str, now: datetime) -> None:
    if value > now + MAX_CLOCK_SKEW:
        raise InvalidArgument(field, f"is more than {MAX_CLOCK_SKEW} in the future")


def validate_impression(event: Impression, where: str, now: datetime | None = None) -> Impression:
    now = now or datetime.now(timezone.utc)
    _check_id(event.event_id, f"{where}.event_id")
    _check_id(event.request_id, f"{where}.request_id")
    for name in ("user_id", "session_id", "model_version", "experiment_arm"):
        _check_id(getattr(event, name), f"{where}.{name}", required=False)
    if len(event.query) > 2_000:
        raise InvalidArgument(f"{where}.query", "must be at most 2000 characters")
    check_storable(event.query, f"{where}.query")
    _check_enum(event.surface, f"{where}.surface", SURFACES, "SURFACE")
    # No products is a search that found nothing: logged too, so that zero-result searches count
    # in every report (an arm that often finds nothing must not look better for it).
    if len(event.product_ids) > MAX_PRODUCTS_PER_IMPRESSION:
        raise InvalidArgument(f"{where}.product_ids", f"must list at most {MAX_PRODUCTS_PER_IMPRESSION} products")
    for index, product_id in enumerate(event.product_ids):
        _check_id(product_id, f"{where}.product_ids[{index}]")
    if event.first_position < 1:
        raise InvalidArgument(f"{where}.first_position", f"must be >= 1, got {event.first_position}")
    _check_time(event.occurred_at, f"{where}.occurred_at", now)
    _check_features(event, where)
    _check_interleaving_arms(event, where)
    _check_propensities(event, where)
    return event


def _check_aligned(values: tuple, event: Impression, field: str) -> None:
    if values and len(values) != len(event.product_ids):
        raise InvalidArgument(
            field,
            f"must be empty or have one entry per product ({len(event.product_ids)}), got {len(values)}",
        )


def _check_features(event: Impression, where: str) -> None:
    _check_aligned(event.features, event, f"{where}.features")
    for index, values in enumerate(event.features):
        _check_feature_values(values, f"{where}.features[{index}]")


def _check_feature_values(values: dict[str, float], field: str) -> None:
    if len(values) > MAX_FEATURES_PER_PRODUCT:
        raise InvalidArgument(field, f"must have at most {MAX_FEATURES_PER_PRODUCT} features, got {len(values)}")
    for name, value in values.items():
        if not 1 <= len(name) <= MAX_FEATURE_NAME_CHARS:
            raise InvalidArgument(f"{field}.values", f"feature names must be 1-{MAX_FEATURE_NAME_CHARS} characters")
        check_storable(name, f"{field}.values")
        if not math.isfinite(value):
            raise InvalidArgument(f"{field}.values[{name!r}]", f"must be a finite number, got {value}")


def _check_interleaving_arms(event: Impression, where: str) -> None:
    _check_aligned(event.interleaving_arms, event, f"{where}.interleaving_arms")
    for index, arm in enumerate(event.interleaving_arms):
        if not 1 <= len(arm) <= MAX_ARM_CHARS:
            raise InvalidArgument(f"{where}.interleaving_arms[{index}]", f"must be 1-{MAX_ARM_CHARS} characters")
        check_storable(arm, f"{where}.interleaving_arms[{index}]")


def validate_interaction(event: Interaction, where: str, now: datetime | None = None) -> Interaction:
    now = now or datetime.now(timezone.utc)
    _check_id(event.event_id, f"{where}.event_id")
    _check_id(event.request_id, f"{where}.request_id")
    _check_id(event.product_id, f"{where}.product_id")
    _check_id(event.user_id, f"{where}.user_id", required=False)
    _check_id(event.session_id, f"{where}.session_id", required=False)
    _check_enum(event.type, f"{where}.type", INTERACTION_TYPES, "INTERACTION_TYPE")
    if event.position == 0:
        raise InvalidArgument(f"{where}.position", "is required")
    if event.position < 1:
        raise InvalidArgument(f"{where}.position", f"must be >= 1 (the position shown), got {event.position}")
    if event.quantity < 1:
        raise InvalidArgument(f"{where}.quantity", f"must be >= 1, got {event.quantity}")
    if not math.isfinite(event.value) or event.value < 0:
        raise InvalidArgument(f"{where}.value", f"must be a finite number >= 0, got {event.value}")
    _check_time(event.occurred_at, f"{where}.occurred_at", now)
    return event


def _check_propensities(event: Impression, where: str) -> None:
    _check_aligned(event.propensities, event, f"{where}.propensities")
    for index, propensity in enumerate(event.propensities):
        if not (math.isfinite(propensity) and 0.0 < propensity <= 1.0):
            raise InvalidArgument(f"{where}.propensities[{index}]", f"must be a probability in (0, 1], got {propensity}")
    if not event.exploration_pool:
        return
    field = f"{where}.exploration_pool"
    if not event.propensities:
        raise InvalidArgument(field, "must be empty unless propensities are given (an explored page)")
    if len(event.exploration_pool) > MAX_EXPLORATION_POOL:
        raise InvalidArgument(field, f"must list at most {MAX_EXPLORATION_POOL} products, got {len(event.exploration_pool)}")
    for index, (product_id, features, shown) in enumerate(event.exploration_pool):
        _check_id(product_id, f"{field}[{index}]")
        _check_feature_values(features, f"{where}.exploration_pool_features[{index}]")
        if not (math.isfinite(shown) and 0.0 <= shown <= 1.0):
            raise InvalidArgument(f"{where}.exploration_pool_shown[{index}]", f"must be a probability in [0, 1] (0 = not logged), got {shown}")
    missing = set(event.product_ids) - {product_id for product_id, _, _ in event.exploration_pool}
    if missing:
        raise InvalidArgument(field, f"must hold every shown product; missing {sorted(missing)[:3]}")

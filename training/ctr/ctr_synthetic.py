"""Synthetic impressions, clicks and purchases from a known click model, to check the CTR
pipeline (reader, position-bias correction, export, evaluation) where the truth is known.

Each page shows ``page_size`` products ordered by a *logging policy* (mostly popularity, a
little text relevance). The shopper examines position p with probability ``p ** -eta``
(position bias), clicks an examined product with probability sigmoid(true relevance), which
depends on text similarity and not on popularity, and buys a clicked one with probability
sigmoid(purchase logit), which depends on a brand match. Because the policy puts popular items
on top, popularity and clicks are correlated only through position: a model trained naively
on these labels learns that popularity matters, a model that separates position does not.

Not a shop simulator (``shelfwise simulate`` is that); a fixture with a known answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Mapping

import numpy as np

from services.events.model import Impression, Interaction
from services.ranking.features import FEATURE_NAMES
from training.ctr.ctr_head import sample_features


def _weights(values: Mapping[str, float]) -> np.ndarray:
    return np.array([values.get(name, 0.0) for name in FEATURE_NAMES], dtype=np.float64)


@dataclass(frozen=True)
class ClickModel:
    relevance: Mapping[str, float] = field(default_factory=lambda: {"dense_similarity": 5.0, "category_match": 1.0})
    relevance_bias: float = -2.5
    purchase: Mapping[str, float] = field(default_factory=lambda: {"brand_match": 2.5})
    purchase_bias: float = -2.0
    # P(examined | position p) = p ** -eta.
    eta: float = 1.0
    # The logging policy's score: what the pages were ordered by.
    policy: Mapping[str, float] = field(default_factory=lambda: {"popularity": 1.0, "dense_similarity": 0.2})
    policy_noise: float = 0.05

    def relevance_logits(self, features: np.ndarray) -> np.ndarray:
        return self.relevance_bias + np.asarray(features, dtype=np.float64) @ _weights(self.relevance)

    def purchase_logits(self, features: np.ndarray) -> np.ndarray:
        return self.purchase_bias + np.asarray(features, dtype=np.float64) @ _weights(self.purchase)

    def examination(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(positions, dtype=np.float64) ** -self.eta


@dataclass
class SyntheticEvents:
    impressions: list[Impression]
    interactions: list[Interaction]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


@dataclass(frozen=True)
class LogShape:
    """How the synthetic log looks: products per page, the id prefix of its impressions, and
    every how many impressions one is logged without features (0: none)."""

    page_size: int = 10
    prefix: str = "syn"
    without_features_every: int = 0


def generate(
    count: int,
    start: datetime,
    step: timedelta = timedelta(minutes=1),
    model: ClickModel = ClickModel(),
    seed: int = 0,
    shape: LogShape = LogShape(),
) -> SyntheticEvents:
    """``count`` impressions, one every ``step`` from ``start``, with their clicks and purchases.
    Every ``without_features_every``-th impression (0: none) is logged without features, as an
    old client would; it still gets clicks."""
    page_size, prefix, without_features_every = shape.page_size, shape.prefix, shape.without_features_every
    rng = np.random.default_rng(seed)
    impressions: list[Impression] = []
    interactions: list[Interaction] = []
    policy = _weights(model.policy)
    for index in range(count):
        features = sample_features(page_size, rng).astype(np.float64)
        order = np.argsort(-(features @ policy + model.policy_noise * rng.standard_normal(page_size)), kind="stable")
        features = features[order].astype(np.float32)
        first_position = 1 if rng.random() < 0.8 else 1 + page_size * int(rng.integers(1, 4))
        positions = first_position + np.arange(page_size)
        request_id = f"{prefix}-req-{seed}-{index}"
        product_ids = tuple(f"{prefix}-p{int(rng.integers(0, 10_000))}-{index}-{slot}" for slot in range(page_size))
        occurred_at = start + index * step
        logged = index % without_features_every != 0 if without_features_every else True
        impressions.append(Impression(
            event_id=f"{prefix}-imp-{seed}-{index}",
            request_id=request_id,
            surface="search",
            product_ids=product_ids,
            first_position=first_position,
            occurred_at=occurred_at,
            query="synthetic",
            model_version="synthetic-policy",
            # Ranking leaves zero-valued features out; the reader must read them back as 0.
            features=tuple({name: float(v) for name, v in zip(FEATURE_NAMES, row) if v != 0.0} for row in features)
            if logged else (),
        ))
        clicked = rng.random(page_size) < model.examination(positions) * _sigmoid(model.relevance_logits(features))
        bought = clicked & (rng.random(page_size) < _sigmoid(model.purchase_logits(features)))
        for slot in np.flatnonzero(clicked):
            common = dict(request_id=request_id, product_id=product_ids[slot], position=int(positions[slot]))
            interactions.append(Interaction(event_id=f"{prefix}-click-{seed}-{index}-{slot}", type="click",
                                            occurred_at=occurred_at + timedelta(seconds=5 + int(slot)), **common))
            if bought[slot]:
                interactions.append(Interaction(event_id=f"{prefix}-buy-{seed}-{index}-{slot}", type="purchase",
                                                occurred_at=occurred_at + timedelta(minutes=3), value=10.0, **common))
    return SyntheticEvents(impressions, interactions)


def records(events: SyntheticEvents) -> list[dict]:
    """The events as the reader's query returns them (for in-memory use, no database)."""
    by_request: dict[str, tuple[set, set]] = {}
    for event in events.interactions:
        clicked, purchased = by_request.setdefault(event.request_id, (set(), set()))
        if event.type == "click":
            clicked.add(event.position)
        elif event.type == "purchase":
            purchased.add(event.product_id)
    return [
        {
            "request_id": impression.request_id,
            "occurred_at": impression.occurred_at,
            "first_position": impression.first_position,
            "product_ids": list(impression.product_ids),
            "features": list(impression.features),
            "clicked_positions": sorted(by_request.get(impression.request_id, (set(), set()))[0]),
            "purchased_ids": sorted(by_request.get(impression.request_id, (set(), set()))[1]),
        }
        for impression in events.impressions
    ]

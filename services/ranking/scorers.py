"""Scorers: a learned CTR head (ONNX, from the model repository) when one is deployed, else a
transparent weighted sum of the features. Both explain each score as per-feature parts.

The feature-scoring weights encode what matters before any behaviour is learned: text
relevance first (dense 0.40, BM25 0.15, fusion 0.10), then what the shopper named (category
0.10, brand 0.07, attributes 0.08), then popularity (0.10). Those sum to 1.0: a product that
matches the query's meaning, words and named attributes scores near 1. Personal affinity
(0.20) comes on top, so that for a shopper with no history (affinity 0 everywhere) the order is
exactly the non-personal one. With a history it reorders results of similar relevance towards
their taste, and in recommendations without a query (where text relevance is 0 for every
candidate) taste outweighs popularity: twice its weight, so a product the shopper is half as
likely to want needs to be clearly more popular to come first.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from services.common.inference import InferenceBackend
from services.ranking.features import FEATURE_NAMES

CTR_HEAD_MODEL = "ctr_head"

FEATURE_WEIGHTS = {
    "dense_similarity": 0.40,
    "bm25": 0.15,
    "fusion": 0.10,
    "brand_match": 0.07,
    "category_match": 0.10,
    "attribute_match": 0.08,
    "popularity": 0.10,
    "personal_affinity": 0.20,
}


class Scorer(Protocol):
    version: str

    async def score(self, features: np.ndarray) -> np.ndarray: ...

    async def contributions(self, features: np.ndarray) -> np.ndarray: ...


class FeatureScorer:
    """score = Σ weight_f · feature_f."""

    version = "feature-scoring/1"

    def __init__(self, weights: dict[str, float] | None = None):
        weights = weights or FEATURE_WEIGHTS
        self._weights = np.array([weights[name] for name in FEATURE_NAMES], dtype=np.float32)

    async def score(self, features: np.ndarray) -> np.ndarray:
        return features @ self._weights

    async def contributions(self, features: np.ndarray) -> np.ndarray:
        return features * self._weights


class OnnxCtrHead:
    """`ctr_head` model: input `features` float32 [n, F], output `ctr` float32 [n, 1]
    (click probability). A feature's contribution is how much the score drops when that
    feature is set to zero (occlusion), computed in one batched call for the page shown."""

    def __init__(self, backend: InferenceBackend):
        self._backend = backend
        self.version = backend.model_version(CTR_HEAD_MODEL).label

    async def score(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0, dtype=np.float32)
        result = await self._backend.infer(CTR_HEAD_MODEL, {"features": features.astype(np.float32)}, ["ctr"])
        return result["ctr"].reshape(-1)

    async def contributions(self, features: np.ndarray) -> np.ndarray:
        n, width = features.shape
        occluded = np.repeat(features[None, :, :], width, axis=0)
        for column in range(width):
            occluded[column, :, column] = 0.0
        scores = await self.score(np.concatenate([features, occluded.reshape(width * n, width)]))
        base, rest = scores[:n], scores[n:].reshape(width, n)
        return (base[None, :] - rest).T


def create_scorer(backend: InferenceBackend | None) -> Scorer:
    if backend is not None and backend.has_model(CTR_HEAD_MODEL):
        return OnnxCtrHead(backend)
    return FeatureScorer()

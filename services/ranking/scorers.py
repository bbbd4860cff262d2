"""Scorers: a learned CTR head (ONNX, from the model repository) when one is deployed, else a
transparent weighted sum of the features. Both explain each score as per-feature parts. And the
relevance ranker (ONNX, LambdaMART trained on judgments), which orders search results when one
is deployed (services/ranking/ranker.py says how the two combine).

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

import json
from typing import Protocol

import numpy as np

from services.common.inference import InferenceBackend
from services.ranking.features import FEATURE_NAMES
from services.ranking.relevance import RELEVANCE_FEATURES

CTR_HEAD_MODEL = "ctr_head"
RELEVANCE_RANKER_MODEL = "relevance_ranker"
# metadata.json "kind" of a CTR head trained on logged events (training/ctr/ctr_head.py TRAINED_KIND).
TRAINED_ON_EVENTS = "trained on events"

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
    feature is set to zero (occlusion), computed in one batched call for the page shown.
    `trained_on_events`: whether this version learned from the shop's logged behaviour (version
    1 is the formula written as a graph, which learned nothing)."""

    def __init__(self, backend: InferenceBackend):
        self._backend = backend
        model = backend.model_version(CTR_HEAD_MODEL)
        self.version = model.label
        self.trained_on_events = _metadata(model.path).get("kind") == TRAINED_ON_EVENTS

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


class OnnxRelevanceRanker:
    """`relevance_ranker` model (`shelfwise train ranker`: LambdaMART trained on relevance
    judgments, calibrated): input `features` float32 [n, len(RELEVANCE_FEATURES)], output
    `relevance` float32 [n, 1], the log-odds that the candidate is relevant. metadata.json
    names the features it was trained on and `threshold`, the probability from which a
    candidate counts as relevant (chosen on its training data, see training/search/train_ranker.py)."""

    def __init__(self, backend: InferenceBackend):
        self._backend = backend
        model = backend.model_version(RELEVANCE_RANKER_MODEL)
        self.version = model.label
        metadata = _metadata(model.path)
        if tuple(metadata.get("features", ())) != RELEVANCE_FEATURES:
            raise ValueError(
                f"{self.version} was trained on features {metadata.get('features')}, this ranking computes "
                f"{list(RELEVANCE_FEATURES)}: train it again (shelfwise train ranker)"
            )
        self.threshold = float(metadata["threshold"])

    async def score(self, features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0, dtype=np.float32)
        result = await self._backend.infer(
            RELEVANCE_RANKER_MODEL, {"features": features.astype(np.float32)}, ["relevance"]
        )
        return result["relevance"].reshape(-1)

    async def contributions(self, features: np.ndarray, neutral: np.ndarray) -> np.ndarray:
        """How much each feature adds to each row's score: the score minus the score with that
        feature at its neutral value (`relevance.neutral_row`), in one batched call."""
        n, width = features.shape
        occluded = np.repeat(features[None, :, :], width, axis=0)
        for column in range(width):
            occluded[column, :, column] = neutral[column]
        scores = await self.score(np.concatenate([features, occluded.reshape(width * n, width)]))
        base, rest = scores[:n], scores[n:].reshape(width, n)
        return (base[None, :] - rest).T


def _metadata(model_path) -> dict:
    path = model_path.parent / "metadata.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def create_relevance_ranker(backend: InferenceBackend | None) -> OnnxRelevanceRanker | None:
    if backend is not None and backend.has_model(RELEVANCE_RANKER_MODEL):
        return OnnxRelevanceRanker(backend)
    return None


def create_scorer(backend: InferenceBackend | None) -> Scorer:
    if backend is not None and backend.has_model(CTR_HEAD_MODEL):
        return OnnxCtrHead(backend)
    return FeatureScorer()

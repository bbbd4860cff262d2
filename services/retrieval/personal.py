"""Personal retrieval: from a shopper's history (product ids, oldest first) to a shopper vector,
and the item vectors it is compared with.

With a sequence model deployed (`user_sequence_encoder` in the model repository, trained by
`shelfwise train rec`), the history's item vectors go through the model's ONNX encoder and the
shopper vector is scored against every product's item vector by dot product, as in training.
The version folder holds, next to `model.onnx`:

- `items.npz`: `product_ids` and `vectors` [n, dim] of the products seen in training (the
  table shoppers are scored against), `history_vectors` [n, dim] (the same products' vectors
  as history input: a model with an untied output table has two; exports without the array
  have one table for both), and the content projection `content_weight` [text_dim, dim],
  `content_bias` [dim] that maps a text embedding into the item space (both ends share it).
  Products added to the catalogue after training get `text_vector @ content_weight +
  content_bias` (the model was trained with ID dropout so that this content part alone is a
  usable item vector): new products are recommendable without a retrain.
- `metadata.json`: `max_length`, `dim`, and `text_encoder` (the "<model>/<version>" whose
  embeddings the projection reads; with any other text encoder new products get no item vector
  until the next training, rather than a vector from the wrong space).

Without a sequence model ("text-history"), the shopper is a mixture of their recent interests:
the next product is near one of the last `MAX_INTERESTS` steps, a recent one more likely,

    P(product) ∝ Σ_h w_h · exp(cos(product, h) / T),   w_h = RECENCY_DECAY ** age(h)

Content-based, but personal and fresh from the first click. A mixture, not the mean of the
history's embeddings: a shopper who bought shoes and then tea wants shoes or tea, and the
mean of the two lands on whatever sits between them (coffee, snacks) in the text space.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from services.common.inference import InferenceBackend

log = logging.getLogger(__name__)

USER_SEQUENCE_ENCODER = "user_sequence_encoder"
TEXT_HISTORY = "text-history"
MAX_HISTORY = 200
# Text-history: each older step counts this much less than the next one, and only the most
# recent steps are interests (older ones weigh under 1% of the latest at this decay anyway).
RECENCY_DECAY = 0.8
MAX_INTERESTS = 20
# Text-history affinity treats cosine / temperature as a logit, like the sequence model's; raw
# cosines would not do (a taste signal of 0.80 vs 0.75 would lose to any popularity difference).
# 0.2 for the Universal Sentence Encoder, the content space by default, whose cosines between
# related products spread wider than e5's (0.05 was chosen for e5): at 0.05 and 0.1 on the demo
# catalogue, the near-duplicate neighbours of two older running-shoe clicks outweighed three
# newer tea purchases; at 0.2 teas lead and shoes follow. A judgement on one catalogue, not a
# measurement: tune it with the sequence model's evaluation when a shop has events.
TEXT_HISTORY_TEMPERATURE = 0.2


@dataclass(frozen=True)
class ItemTable:
    """The exported item side of a sequence model (see the module docstring)."""

    product_ids: tuple[str, ...]
    vectors: np.ndarray
    history_vectors: np.ndarray
    content_weight: np.ndarray
    content_bias: np.ndarray
    text_encoder: str
    max_length: int

    @property
    def dimension(self) -> int:
        return int(self.vectors.shape[1])

    @classmethod
    def read(cls, version_dir: Path) -> "ItemTable":
        metadata = json.loads((version_dir / "metadata.json").read_text())
        with np.load(version_dir / "items.npz", allow_pickle=False) as data:
            vectors = np.asarray(data["vectors"], dtype=np.float32)
            history_vectors = (np.asarray(data["history_vectors"], dtype=np.float32)
                               if "history_vectors" in data.files else vectors)
            if history_vectors.shape != vectors.shape:
                raise ValueError(f"{version_dir / 'items.npz'}: history_vectors {list(history_vectors.shape)} "
                                 f"and vectors {list(vectors.shape)} differ in shape")
            return cls(
                product_ids=tuple(str(p) for p in data["product_ids"]),
                vectors=vectors,
                history_vectors=history_vectors,
                content_weight=np.asarray(data["content_weight"], dtype=np.float32),
                content_bias=np.asarray(data["content_bias"], dtype=np.float32),
                text_encoder=str(metadata["text_encoder"]),
                max_length=int(metadata["max_length"]),
            )


class SequenceModel:
    """The deployed sequence model: item vectors for catalogue products, and shopper vectors
    from histories of item vectors (through the inference backend: embedded ONNX Runtime or
    Triton, the same ONNX file)."""

    def __init__(self, backend: InferenceBackend, text_encoder_version: str):
        self._backend = backend
        model = backend.model_version(USER_SEQUENCE_ENCODER)
        self.version = model.label
        self.table = ItemTable.read(model.path.parent)
        self._row_of = {product_id: row for row, product_id in enumerate(self.table.product_ids)}
        self._projects_content = self.table.text_encoder == text_encoder_version
        if not self._projects_content:
            log.warning(
                "%s was trained on %s embeddings but the catalogue uses %s: products added since "
                "training get no item vector until the next `shelfwise train rec`",
                self.version, self.table.text_encoder, text_encoder_version,
            )

    @property
    def dimension(self) -> int:
        return self.table.dimension

    def item_vectors(self, product_ids: Sequence[str], text_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(vectors [n, dim], has_vector [n]): trained vectors for products seen in training,
        projected text embeddings for the others (when the text encoder matches)."""
        vectors = np.zeros((len(product_ids), self.dimension), dtype=np.float32)
        known = np.zeros(len(product_ids), dtype=bool)
        new = []
        for index, product_id in enumerate(product_ids):
            row = self._row_of.get(product_id)
            if row is None:
                new.append(index)
            else:
                vectors[index] = self.table.vectors[row]
                known[index] = True
        if new and self._projects_content:
            vectors[new] = np.asarray(text_vectors, dtype=np.float32)[new] @ self.table.content_weight + self.table.content_bias
            known[new] = True
        return vectors, known

    def history_vectors(self, product_ids: Sequence[str], item_vectors: np.ndarray) -> np.ndarray:
        """The history input of the user encoder for these products, given their `item_vectors`:
        trained products read the table's history vectors (different from their item vectors
        when the model's output table is untied); the others keep their item vector, the
        projected text embedding, which is the same at both ends."""
        inputs = np.array(item_vectors, dtype=np.float32, copy=True)
        for index, product_id in enumerate(product_ids):
            row = self._row_of.get(product_id)
            if row is not None:
                inputs[index] = self.table.history_vectors[row]
        return inputs

    async def user_vector(self, history_vectors: np.ndarray) -> np.ndarray:
        """Shopper vector [dim] from the item vectors of the history, oldest first: the most
        recent `max_length` steps, right-aligned as in training."""
        length = self.table.max_length
        recent = history_vectors[-length:]
        history = np.zeros((1, length, self.dimension), dtype=np.float32)
        mask = np.zeros((1, length), dtype=np.float32)
        history[0, length - len(recent):] = recent
        mask[0, length - len(recent):] = 1.0
        result = await self._backend.infer(
            USER_SEQUENCE_ENCODER, {"history": history, "history_mask": mask}, ["user_vector"]
        )
        return result["user_vector"].reshape(self.dimension)


def text_history_interests(text_vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The interests of a history (unit text embeddings, oldest first): its most recent
    `MAX_INTERESTS` vectors and their log recency weights (0 for the latest step)."""
    interests = np.asarray(text_vectors, dtype=np.float32)[-MAX_INTERESTS:]
    ages = np.arange(len(interests) - 1, -1, -1, dtype=np.float32)
    return interests, ages * np.float32(np.log(RECENCY_DECAY))


def text_history_logits(interests: np.ndarray, log_weights: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """log Σ_h w_h exp(cos(candidate, h) / T) for each candidate row (unit vectors): the
    mixture's log-probability up to a constant (see the module docstring)."""
    if len(candidates) == 0:
        return np.zeros(0, dtype=np.float32)
    terms = (candidates @ interests.T) / TEXT_HISTORY_TEMPERATURE + log_weights
    best = terms.max(axis=1, keepdims=True)
    return (best[:, 0] + np.log(np.exp(terms - best).sum(axis=1))).astype(np.float32)


def relative_probability(logits: np.ndarray, known: np.ndarray | None = None) -> np.ndarray:
    """exp(logit - best logit): each item's probability relative to the most likely one (1 for
    it), keeping the order. Rows not `known` get 0 and do not count for the best."""
    known = np.ones(len(logits), dtype=bool) if known is None else known
    if not known.any():
        return np.zeros(len(logits), dtype=np.float32)
    return (np.exp(logits - logits[known].max()) * known).astype(np.float32)


def cosine(vector: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Cosine of one vector with each row (0 for zero rows)."""
    norms = np.linalg.norm(matrix, axis=1) * float(np.linalg.norm(vector))
    dots = matrix @ vector
    return np.divide(dots, norms, out=np.zeros_like(dots), where=norms > 0)

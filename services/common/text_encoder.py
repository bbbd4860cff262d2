"""Text → unit-length embedding through the `text_encoder` model of the repository.

Tokenization happens here, with the tokenizer exported next to the model. Token inputs are
padded to a few fixed length buckets so that requests of different lengths can merge into one
dynamic batch on Triton; padding is masked, so the bucket does not change the embedding.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from services.common.inference import InferenceBackend

MODEL_NAME = "text_encoder"
DEFAULT_BUCKETS = (16, 32, 64, 128)


@dataclass(frozen=True)
class EncoderMetadata:
    dimension: int
    max_sequence_length: int
    length_buckets: tuple[int, ...]

    @classmethod
    def read(cls, version_dir: Path) -> "EncoderMetadata":
        data = json.loads((version_dir / "metadata.json").read_text())
        return cls(
            dimension=int(data["dimension"]),
            max_sequence_length=int(data["max_sequence_length"]),
            length_buckets=tuple(int(b) for b in data.get("length_buckets", DEFAULT_BUCKETS)),
        )


class TextEncoder:
    """Encodes texts in batches of at most `max_batch_size` (the model's Triton limit)."""

    def __init__(self, backend: InferenceBackend, max_batch_size: int = 64):
        from tokenizers import Tokenizer

        self._backend = backend
        model = backend.model_version(MODEL_NAME)
        version_dir = model.path.parent
        self.metadata = EncoderMetadata.read(version_dir)
        self.version = model.label
        self._tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer" / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.metadata.max_sequence_length)
        self._tokenizer.no_padding()
        self._max_batch_size = max_batch_size

    @property
    def dimension(self) -> int:
        return self.metadata.dimension

    def _bucket(self, length: int) -> int:
        for bucket in self.metadata.length_buckets:
            if length <= bucket:
                return bucket
        return self.metadata.max_sequence_length

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        encodings = self._tokenizer.encode_batch(list(texts))
        width = self._bucket(max(len(e.ids) for e in encodings))
        input_ids = np.zeros((len(texts), width), dtype=np.int64)
        attention_mask = np.zeros((len(texts), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            input_ids[row, :n] = encoding.ids
            attention_mask[row, :n] = 1
        return input_ids, attention_mask

    async def encode(self, texts: Sequence[str], timeout: float | None = None) -> np.ndarray:
        """float32 [len(texts), dimension], unit length rows. `timeout` applies per batch call
        (default: the backend's, sized for queries; catalogue encoding passes a longer one)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        chunks = []
        # Sorting by length keeps each chunk in the smallest bucket that fits it.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self._max_batch_size):
            batch = [texts[i] for i in order[start : start + self._max_batch_size]]
            input_ids, attention_mask = self.tokenize(batch)
            result = await self._backend.infer(
                MODEL_NAME,
                {"input_ids": input_ids, "attention_mask": attention_mask},
                ["sentence_embedding"],
                timeout=timeout,
            )
            chunks.append(result["sentence_embedding"].astype(np.float32, copy=False))
        stacked = np.concatenate(chunks)
        vectors = np.empty_like(stacked)
        vectors[np.array(order)] = stacked
        return vectors

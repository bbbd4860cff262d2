"""Text → unit-length embedding through a text-encoder model of the repository.

Which models are settings (`SHELFWISE_TEXT_ENCODER`, default `text_encoder` (MiniLM), and
`SHELFWISE_MULTILINGUAL_ENCODER`, default `text_encoder_use`); every text encoder takes the same
tensors (`training.encoders.export`), and its metadata.json says what differs:
the dimension, the length buckets, and the prefixes its texts need (e5 was trained on
"query: ..." for search text and "passage: ..." for documents; MiniLM on bare text). Callers say
which kind of text they encode and the prefix is added here, so no caller has to know the model.

Tokenization happens here too, with the tokenizer exported next to the model. Token inputs are
padded to a few fixed length buckets so that requests of different lengths can merge into one
dynamic batch on Triton; padding is masked, so the bucket does not change the embedding. A full
batch (`max_batch_size` texts: catalogue encoding) cannot merge with anything, so it is padded
only to its longest text, and texts are sorted by token count so that a batch's texts are of
nearly one length: product texts of about 42 tokens padded to the 64 bucket cost 1.5x the
compute (`shelfwise bench encoding` measures both paddings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np

from services.common.config import DEFAULT_TEXT_ENCODER
from services.common.inference import InferenceBackend

# The MiniLM (English) encoder, the default of SHELFWISE_TEXT_ENCODER.
MODEL_NAME = "text_encoder"
DEFAULT_MODEL_NAME = DEFAULT_TEXT_ENCODER
DEFAULT_BUCKETS = (16, 32, 64, 128)
OUTPUT_NAME = "sentence_embedding"
TextKind = Literal["query", "passage"]
TEXT_KINDS: tuple[str, ...] = ("query", "passage")


def is_text_encoder(model_name: str) -> bool:
    """Text encoders share a naming scheme (`text_encoder`, `text_encoder_<variant>`)."""
    return model_name == MODEL_NAME or model_name.startswith(MODEL_NAME + "_")


@dataclass(frozen=True)
class EncoderMetadata:
    dimension: int
    max_sequence_length: int
    length_buckets: tuple[int, ...]
    query_prefix: str = ""
    passage_prefix: str = ""

    @classmethod
    def read(cls, version_dir: Path) -> "EncoderMetadata":
        data = json.loads((version_dir / "metadata.json").read_text())
        return cls(
            dimension=int(data["dimension"]),
            max_sequence_length=int(data["max_sequence_length"]),
            length_buckets=tuple(int(b) for b in data.get("length_buckets", DEFAULT_BUCKETS)),
            # Exports from before prefixes were recorded are MiniLM's, which uses none.
            query_prefix=str(data.get("query_prefix", "")),
            passage_prefix=str(data.get("passage_prefix", "")),
        )

    def prefix(self, kind: str) -> str:
        if kind == "query":
            return self.query_prefix
        if kind == "passage":
            return self.passage_prefix
        raise ValueError(f"kind must be one of {TEXT_KINDS}, got {kind!r}")


class TextEncoder:
    """Encodes texts in batches of at most `max_batch_size` (the model's Triton limit)."""

    def __init__(self, backend: InferenceBackend, model_name: str = DEFAULT_MODEL_NAME, max_batch_size: int = 64):
        from tokenizers import Tokenizer

        self._backend = backend
        self.model_name = model_name
        model = backend.model_version(model_name)
        version_dir = model.path.parent
        self.metadata = EncoderMetadata.read(version_dir)
        # "<model>/<version>": embeddings cached under it (PostgreSQL) never mix two encoders.
        self.version = model.label
        self._tokenizer = Tokenizer.from_file(str(version_dir / "tokenizer" / "tokenizer.json"))
        self._tokenizer.enable_truncation(self.metadata.max_sequence_length)
        self._tokenizer.no_padding()
        self._max_batch_size = max_batch_size

    @property
    def max_batch_size(self) -> int:
        return self._max_batch_size

    @property
    def dimension(self) -> int:
        return self.metadata.dimension

    def _bucket(self, length: int) -> int:
        for bucket in self.metadata.length_buckets:
            if length <= bucket:
                return bucket
        return self.metadata.max_sequence_length

    def prefixed(self, texts: Sequence[str], kind: TextKind) -> list[str]:
        """`texts` as the model reads them: with the model's prefix for this kind of text."""
        prefix = self.metadata.prefix(kind)
        return [prefix + text for text in texts]

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids and mask of texts that already carry their prefix (see `prefixed`), padded
        to the smallest length bucket that holds the longest text."""
        return self._pad([encoding.ids for encoding in self._tokenizer.encode_batch(list(texts))], to_bucket=True)

    def _pad(self, token_ids: Sequence[Sequence[int]], to_bucket: bool) -> tuple[np.ndarray, np.ndarray]:
        longest = max(len(ids) for ids in token_ids)
        width = self._bucket(longest) if to_bucket else longest
        input_ids = np.zeros((len(token_ids), width), dtype=np.int64)
        attention_mask = np.zeros((len(token_ids), width), dtype=np.int64)
        for row, ids in enumerate(token_ids):
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        return input_ids, attention_mask

    def batches(
        self, texts: Sequence[str], kind: TextKind, *, pad_full_batches_to_bucket: bool = False
    ) -> Iterator[tuple[list[int], np.ndarray, np.ndarray]]:
        """The model inputs `encode` sends for `texts`: (rows of `texts`, input_ids,
        attention_mask) per batch of at most `max_batch_size`. Texts are sorted by token count,
        so a batch holds texts of nearly one length. Buckets let Triton merge requests of
        different lengths; a full batch merges with nothing, so it is padded only to its longest
        text (`pad_full_batches_to_bucket` pads it to the bucket, for `shelfwise bench encoding`)."""
        prefix = self.metadata.prefix(kind)
        token_ids = [encoding.ids for encoding in self._tokenizer.encode_batch([prefix + text for text in texts])]
        order = sorted(range(len(texts)), key=lambda i: len(token_ids[i]))
        for start in range(0, len(order), self._max_batch_size):
            rows = order[start : start + self._max_batch_size]
            to_bucket = pad_full_batches_to_bucket or len(rows) < self._max_batch_size
            yield (rows, *self._pad([token_ids[i] for i in rows], to_bucket))

    async def encode(self, texts: Sequence[str], *, kind: TextKind, timeout: float | None = None) -> np.ndarray:
        """float32 [len(texts), dimension], unit length rows. `kind` is "query" (what a shopper
        typed) or "passage" (product text). `timeout` applies per batch call (default: the
        backend's, sized for queries; catalogue encoding passes a longer one)."""
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for rows, input_ids, attention_mask in self.batches(texts, kind):
            result = await self._backend.infer(
                self.model_name,
                {"input_ids": input_ids, "attention_mask": attention_mask},
                [OUTPUT_NAME],
                timeout=timeout,
            )
            vectors[rows] = result[OUTPUT_NAME]
        return vectors

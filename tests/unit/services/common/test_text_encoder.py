"""TextEncoder reads a model's prefixes from its metadata.json and puts them in front of every
text by kind (e5 needs "query: " / "passage: "; MiniLM nothing). The model here is a stand-in
backend over a tiny word-level tokenizer, so the tests need no export."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.common.config import DEFAULT_TEXT_ENCODER, text_encoder_model
from services.common.inference import ModelVersion
from services.common.text_encoder import DEFAULT_MODEL_NAME, EncoderMetadata, TextEncoder, is_text_encoder

WORDS = ["[UNK]", "query:", "passage:", "red", "wine", "malbec", "from", "mendoza"]


class RecordingBackend:
    """Serves one model from `version_dir`; answers with each row's token count in column 0."""

    def __init__(self, name: str, version_dir: Path) -> None:
        self.name = name
        self.version_dir = version_dir
        self.requests: list[tuple[str, np.ndarray, np.ndarray]] = []

    def has_model(self, name: str) -> bool:
        return name == self.name

    def model_version(self, name: str) -> ModelVersion:
        assert name == self.name
        return ModelVersion(name, int(self.version_dir.name), self.version_dir / "model.onnx")

    async def infer(self, name, inputs, outputs, timeout=None):
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        self.requests.append((name, ids, mask))
        vectors = np.zeros((len(ids), 4), dtype=np.float32)
        vectors[:, 0] = mask.sum(axis=1)
        return {"sentence_embedding": vectors}

    async def close(self) -> None:
        pass


def write_model(root: Path, name: str, **metadata) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    version_dir = root / name / "1"
    (version_dir / "tokenizer").mkdir(parents=True)
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.save(str(version_dir / "tokenizer" / "tokenizer.json"))
    content = {"model": name, "version": 1, "dimension": 4, "max_sequence_length": 8, "length_buckets": [4, 8]}
    (version_dir / "metadata.json").write_text(json.dumps({**content, **metadata}))
    return version_dir


def decoded(backend: RecordingBackend) -> list[list[str]]:
    rows = []
    for _, ids, mask in backend.requests:
        rows += [[WORDS[i] for i, m in zip(row, row_mask) if m] for row, row_mask in zip(ids, mask)]
    return rows


@pytest.fixture
def e5_like(tmp_path) -> RecordingBackend:
    name = "text_encoder_multilingual"
    return RecordingBackend(name, write_model(tmp_path, name, query_prefix="query: ", passage_prefix="passage: "))


async def test_queries_and_passages_get_the_prefixes_the_metadata_names(e5_like) -> None:
    encoder = TextEncoder(e5_like, model_name="text_encoder_multilingual")
    await encoder.encode(["red wine"], kind="query")
    await encoder.encode(["malbec from mendoza"], kind="passage")
    assert decoded(e5_like) == [["query:", "red", "wine"], ["passage:", "malbec", "from", "mendoza"]]
    assert all(name == "text_encoder_multilingual" for name, _, _ in e5_like.requests)


async def test_a_model_without_prefixes_in_its_metadata_reads_bare_text(tmp_path) -> None:
    backend = RecordingBackend("text_encoder", write_model(tmp_path, "text_encoder"))
    encoder = TextEncoder(backend, model_name="text_encoder")
    assert (encoder.metadata.query_prefix, encoder.metadata.passage_prefix) == ("", "")
    await encoder.encode(["red wine"], kind="query")
    assert decoded(backend) == [["red", "wine"]]


async def test_kind_is_required_and_checked(e5_like) -> None:
    encoder = TextEncoder(e5_like, model_name="text_encoder_multilingual")
    with pytest.raises(TypeError):
        await encoder.encode(["red wine"])  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="kind"):
        await encoder.encode(["red wine"], kind="document")  # type: ignore[arg-type]


async def test_rows_come_back_in_input_order_with_the_prefix_counted(e5_like) -> None:
    encoder = TextEncoder(e5_like, model_name="text_encoder_multilingual", max_batch_size=1)
    vectors = await encoder.encode(["malbec from mendoza", "wine"], kind="passage")
    assert vectors[:, 0].tolist() == [4.0, 2.0]


def test_prefixed_and_tokenize_are_what_encode_sends(e5_like) -> None:
    encoder = TextEncoder(e5_like, model_name="text_encoder_multilingual")
    assert encoder.prefixed(["red wine"], "query") == ["query: red wine"]
    ids, mask = encoder.tokenize(encoder.prefixed(["red wine"], "query"))
    assert ids.shape == mask.shape == (1, 4) and mask.sum() == 3


async def test_a_full_batch_is_padded_to_its_longest_text_a_partial_one_to_its_bucket(e5_like) -> None:
    # Buckets ([4, 8] here) let Triton merge partial batches; a full one merges with nothing.
    encoder = TextEncoder(e5_like, model_name="text_encoder_multilingual", max_batch_size=2)
    vectors = await encoder.encode(["red", "wine", "red wine"], kind="passage")
    widths = [ids.shape[1] for _, ids, _ in e5_like.requests]
    assert widths == [2, 4]  # "passage: red" + "passage: wine" (full, 2 tokens); "passage: red wine" (3 → bucket 4)
    assert vectors[:, 0].tolist() == [2.0, 2.0, 3.0]
    [(rows, ids, mask)] = encoder.batches(["red wine", "wine"], "passage")  # full: 3 tokens, not bucket 4
    assert rows == [1, 0] and ids.shape == (2, 3) and mask.sum() == 5


def test_the_version_label_names_the_model_so_cached_vectors_never_mix(e5_like, tmp_path) -> None:
    e5 = TextEncoder(e5_like, model_name="text_encoder_multilingual")
    minilm = TextEncoder(RecordingBackend("text_encoder", write_model(tmp_path, "text_encoder")), model_name="text_encoder")
    assert e5.version == "text_encoder_multilingual/1" and minilm.version == "text_encoder/1"


def test_metadata_prefix_rejects_unknown_kinds() -> None:
    metadata = EncoderMetadata(4, 8, (4, 8), "query: ", "passage: ")
    assert metadata.prefix("query") == "query: " and metadata.prefix("passage") == "passage: "
    with pytest.raises(ValueError):
        metadata.prefix("title")


def test_the_default_text_encoder_is_the_english_one() -> None:
    assert DEFAULT_MODEL_NAME == DEFAULT_TEXT_ENCODER == "text_encoder"
    assert text_encoder_model({}) == "text_encoder"
    assert text_encoder_model({"SHELFWISE_TEXT_ENCODER": " text_encoder_use "}) == "text_encoder_use"
    with pytest.raises(ValueError, match="SHELFWISE_TEXT_ENCODER"):
        text_encoder_model({"SHELFWISE_TEXT_ENCODER": "../etc"})


def test_text_encoder_names() -> None:
    assert is_text_encoder("text_encoder") and is_text_encoder("text_encoder_multilingual")
    assert is_text_encoder("text_encoder_use")
    assert not is_text_encoder("ctr_head") and not is_text_encoder("text_encoderx")

"""`shelfwise quantize`: the int8 version of the multilingual encoder, through the serving code.

Quantizes the real exported version 1 into a temporary repository (version 1 linked in) and
runs both versions with ``TextEncoder`` over embedded ONNX Runtime, as retrieval does: the int8
graph must take the fast path (QAttention, MatMulInteger), keep a cosine of 0.98 to version 1
on 100 English and Chinese shop texts, and honour the padding mask (a text alone and in a
padded batch embed alike; the first version of the rewrite lost the mask: cosine 0.91).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.support.models import require_export
from training.encoders.e5_texts import REFERENCE_PASSAGES, REFERENCE_QUERIES
from training.encoders.quantize import MIN_COSINE_INT8, main, quantize_sentence_encoder
from training.search.eval_search import finetuned_encoder, trained_from

MODEL = "text_encoder_multilingual"


@pytest.fixture(scope="module")
def repository(tmp_path_factory, model_repository) -> Path:
    source = model_repository / MODEL / "1"
    require_export(source, "tokenizer/tokenizer.json", "metadata.json")
    repository = tmp_path_factory.mktemp("int8-repository")
    (repository / MODEL).mkdir()
    (repository / MODEL / "1").symlink_to(source, target_is_directory=True)
    quantize_sentence_encoder(repository, 2, model_name=MODEL, from_version=1)
    return repository


def encoder(repository: Path, version: int):
    from services.common.inference import EmbeddedOnnxRuntime
    from services.common.text_encoder import TextEncoder

    return TextEncoder(EmbeddedOnnxRuntime(repository, {MODEL: version}), model_name=MODEL)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_the_int8_graph_takes_the_quantized_attention_and_matmul_kernels(repository) -> None:
    graph = onnx.load(str(repository / MODEL / "2" / "model.onnx"), load_external_data=False)
    operators = [node.op_type for node in graph.graph.node]
    assert operators.count("QAttention") == 12  # one per layer of e5-small
    assert operators.count("MatMulInteger") >= 24
    assert "Attention" not in operators


def test_metadata_says_what_it_was_made_from(repository) -> None:
    metadata = json.loads((repository / MODEL / "2" / "metadata.json").read_text())
    source = json.loads((repository / MODEL / "1" / "metadata.json").read_text())
    assert metadata["version"] == 2
    assert metadata["quantization"]["from_version"] == 1
    assert metadata["quantization"]["cosine_to_source"]["min"] >= MIN_COSINE_INT8
    assert metadata["source"].endswith(source["source"])
    for key in ("query_prefix", "passage_prefix", "length_buckets", "max_sequence_length", "dimension"):
        assert metadata[key] == source[key]


async def test_int8_vectors_stay_close_to_the_source_version_through_the_serving_code(repository) -> None:
    for kind, texts in (("query", REFERENCE_QUERIES), ("passage", REFERENCE_PASSAGES)):
        full = await encoder(repository, 1).encode(list(texts), kind=kind)
        int8 = await encoder(repository, 2).encode(list(texts), kind=kind)
        assert cosines(full, int8).min() >= MIN_COSINE_INT8, kind


async def test_padding_is_masked_in_the_quantized_attention(repository) -> None:
    int8 = encoder(repository, 2)
    short = ["green tea", "红酒", "usb cable"]
    alone = np.concatenate([await int8.encode([text], kind="query") for text in short])
    # Padded to the 128 bucket next to a long text. Activation scales are per run, so the
    # vectors may move a little, but attending to padding moved them to cosine ~0.91.
    padded = (await int8.encode(short + [" ".join(REFERENCE_PASSAGES[:8])], kind="query"))[: len(short)]
    assert cosines(alone, padded).min() >= 0.99


def test_an_int8_copy_of_the_zero_shot_version_is_not_a_fine_tuned_encoder(repository, monkeypatch) -> None:
    monkeypatch.delenv("SHELFWISE_MODEL_VERSIONS", raising=False)
    assert trained_from(repository / MODEL / "2") == 1
    assert finetuned_encoder(repository) is None


def test_refuses_what_it_cannot_do(repository, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--model-repository", str(repository), "--version", "1"])
    assert exit_.value.code == 2
    assert "would overwrite the version it is made from" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model-repository", str(repository), "--version", "3", "--from-version", "2"])
    assert "already quantized" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model-repository", str(repository), "--version", "5", "--from-version", "4"])
    assert "holds no exported model" in capsys.readouterr().err


async def test_bench_encoding_compares_the_two_versions_on_the_same_products(repository) -> None:
    from services.cli.bench.encoding import EncodingRuns, bench_encoding, catalog_texts

    texts, source = catalog_texts(None, 130, seed=7)  # two full batches and a partial one
    printed = await bench_encoding(repository, MODEL, texts, source, EncodingRuns(rounds=1, threads=1, versions=[1, 2]))
    assert "SYNTHETIC" in printed.splitlines()[0]
    rows = {line[:18].strip(): line[18:].split() for line in printed.splitlines()[3:-1]}
    assert list(rows) == ["version 1", "version 2"]
    assert rows["version 1"][0] == rows["version 2"][0]  # the same batches
    assert float(rows["version 1"][3]) == 0.0
    assert MIN_COSINE_INT8 <= float(rows["version 2"][4]) < 0.99999  # close, and really another model


def test_the_command_line_reaches_it_and_checks_its_options(repository) -> None:
    import subprocess
    import sys

    def shelfwise(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True, timeout=120)

    refused = shelfwise("quantize", "--model-repository", str(repository), "--version", "2", "--from-version", "2")
    assert refused.returncode == 2 and "would overwrite the version it is made from" in refused.stderr
    for versions in ("0,2", "1,1", "1,x"):
        refused = shelfwise("bench", "encoding", "--model-repository", str(repository), "--versions", versions)
        assert refused.returncode == 2 and "must be distinct version numbers" in refused.stderr, versions

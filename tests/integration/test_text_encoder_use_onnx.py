"""The Universal Sentence Encoder as a repository text encoder: the export's rewrite of the
packaged graph (no custom operator, the token tensors of every text encoder) against the
packaged graph itself, through the services' own TextEncoder."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime_extensions import get_library_path

from services.common.inference import EmbeddedOnnxRuntime
from services.common.text_encoder import TextEncoder
from training.encoders import universal_sentence_encoder as use

TEXTS = ["red wine", "红葡萄酒", "running shoes", "跑鞋", "fresh fruit for a picnic", "新鲜水果", "a" * 400]


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    root = tmp_path_factory.mktemp("use")
    use.export(root, version=1)
    return root


def packaged(texts):
    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    session = ort.InferenceSession(str(use.source_model_path()), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"inputs": np.array(texts, dtype=object)})[0]


async def test_the_exported_encoder_reproduces_the_packaged_graph_through_the_services_text_encoder(repository):
    encoder = TextEncoder(EmbeddedOnnxRuntime(repository), model_name=use.MODEL_NAME)
    assert encoder.dimension == 512 and encoder.version == "text_encoder_use/1"
    short = TEXTS[:-1]
    ours = await encoder.encode(short, kind="query")
    theirs = packaged(short)
    # int8 activations are quantised per run: one text at a time on both sides, to compare like with like.
    alone = np.stack([(await encoder.encode([text], kind="query"))[0] for text in short])
    reference = np.stack([packaged([text])[0] for text in short])
    assert np.min(np.sum(alone * reference, axis=1)) > 0.9999
    assert np.min(np.sum(ours * theirs, axis=1)) > 0.99
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-3)


async def test_a_chinese_query_lands_next_to_its_english_meaning(repository):
    encoder = TextEncoder(EmbeddedOnnxRuntime(repository), model_name=use.MODEL_NAME)
    red_wine, chinese_red_wine, shoes, chinese_shoes = await encoder.encode(TEXTS[:4], kind="query")
    assert red_wine @ chinese_red_wine > red_wine @ chinese_shoes
    assert shoes @ chinese_shoes > shoes @ chinese_red_wine


def test_the_exported_graph_uses_standard_operators_and_the_token_tensors(repository):
    model = onnx.load(str(repository / use.MODEL_NAME / "1" / "model.onnx"))
    assert {opset.domain for opset in model.opset_import} <= {"", "ai.onnx"}
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask"]
    assert [o.name for o in model.graph.output] == ["sentence_embedding"]
    metadata = json.loads((repository / use.MODEL_NAME / "1" / "metadata.json").read_text())
    assert metadata == use.expected_metadata(1) and use.is_up_to_date(repository)
    assert (repository / use.MODEL_NAME / "1" / "tokenizer" / "tokenizer.json").is_file()


def test_the_tokenizer_tokenizes_as_the_packaged_graphs_sentencepiece_operator(repository):
    import sentencepiece

    from tokenizers import Tokenizer

    source = onnx.load(str(use.source_model_path()))
    _, spm_model = use.rewrite_graph(source)
    reference = sentencepiece.SentencePieceProcessor(model_proto=spm_model)
    tokenizer = Tokenizer.from_file(str(repository / use.MODEL_NAME / "1" / "tokenizer" / "tokenizer.json"))
    for text in [*TEXTS[:-1], "  Spaced   out ", "Ｆｕｌｌwidth ＡＢＣ", "Crème brûlée", ""]:
        assert tokenizer.encode(text).ids == [reference.bos_id(), *reference.encode(text), reference.eos_id()]


def test_a_broken_rewrite_is_refused_before_anything_is_installed(tmp_path, monkeypatch):
    from training.onnx_export import ExportVerificationError

    original = use.rewrite_graph

    def rows_split_by_the_padded_width(source):
        model, spm_model = original(source)
        for node in model.graph.node:  # row lengths from the padded ids instead of the mask
            if node.op_type == "ReduceSum" and list(node.input) == ["attention_mask"]:
                node.input[0] = "input_ids"
        return model, spm_model

    monkeypatch.setattr(use, "rewrite_graph", rows_split_by_the_padded_width)
    with pytest.raises(ExportVerificationError):
        use.export(tmp_path, version=1)
    assert not (tmp_path / use.MODEL_NAME / "1").exists()

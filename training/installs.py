"""Versions in a Triton model repository, for the exporters of models that come with a tokenizer
(the text encoders, the Universal Sentence Encoder) and the error every exporter raises when an
exported graph fails its check: where a version lives, whether an install is the one an exporter
would write now, and moving a staged version into place so that an interrupted install is never
taken for a finished one."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


class ExportVerificationError(RuntimeError):
    """The exported graph does not reproduce the reference model's embeddings."""


def version_dir(model_repository: Path, version: int, model_name: str) -> Path:
    return Path(model_repository) / model_name / str(version)


def export_matches(model_repository: Path, model_name: str, version: int, metadata: dict[str, Any]) -> bool:
    """True when ``model.onnx`` and the tokenizer exist for ``version`` and its metadata.json is
    exactly ``metadata``."""
    target = version_dir(model_repository, version, model_name)
    model_file = target / "model.onnx"
    metadata_file = target / "metadata.json"
    if not model_file.is_file() or model_file.stat().st_size == 0 or not metadata_file.is_file():
        return False
    if not (target / "tokenizer" / "tokenizer.json").is_file():
        return False
    try:
        existing = json.loads(metadata_file.read_text())
    except (OSError, ValueError):
        return False
    return existing == metadata


def install_staged_version(staging: Path, target: Path) -> None:
    """Move ``staging``'s model.onnx, tokenizer/ and metadata.json into the version folder
    ``target`` (same filesystem, so each move is atomic). metadata.json goes first out and last
    in, so an interrupted swap is never mistaken for a finished export by export_matches()."""
    target.mkdir(parents=True, exist_ok=True)
    (target / "metadata.json").unlink(missing_ok=True)
    if (target / "tokenizer").exists():
        shutil.rmtree(target / "tokenizer")
    os.replace(staging / "tokenizer", target / "tokenizer")
    os.replace(staging / "model.onnx", target / "model.onnx")
    os.replace(staging / "metadata.json", target / "metadata.json")

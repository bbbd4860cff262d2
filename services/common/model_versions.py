"""Versions of a model in the Triton model repository, for the services' model loader and for
every exporter in training/ (the runtime never imports training/, so the one copy lives here).

A version is the folder ``<repository>/<model>/<n>`` (n >= 1) holding ``model.onnx`` and its
``metadata.json`` (plus whatever the model needs beside, e.g. ``tokenizer/``). Triton ignores
folders whose name is not a number, which is where staged versions are written
(``.export-*``, covered by .gitignore) before they are renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"


def version_dir(repository: Path, model_name: str, version: int) -> Path:
    return Path(repository) / model_name / str(version)


def version_numbers(repository: Path, model_name: str, with_model: bool = False) -> list[int]:
    """The model's numbered version folders, ascending; with `with_model` only those holding a
    model.onnx (what Triton and the services would load)."""
    model_dir = Path(repository) / model_name
    if not model_dir.is_dir():
        return []
    return sorted(
        int(child.name)
        for child in model_dir.iterdir()
        if child.name.isdigit() and child.is_dir() and (not with_model or (child / MODEL_FILE).is_file())
    )


def latest_version(repository: Path, model_name: str) -> int | None:
    """The highest version holding a model.onnx, if any."""
    numbers = version_numbers(repository, model_name, with_model=True)
    return numbers[-1] if numbers else None


def next_version(repository: Path, model_name: str, after: int = 0) -> int:
    """One above every numbered folder (with a model or not, so a version is never reused), and
    above `after` (e.g. 1 where version 1 is kept for what `shelfwise export` writes)."""
    return max([after, *version_numbers(repository, model_name)]) + 1


def read_metadata(repository: Path, model_name: str, version: int) -> dict[str, Any] | None:
    """A version's metadata.json, or None when it is missing, unreadable or not an object."""
    try:
        metadata = json.loads((version_dir(repository, model_name, version) / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return None
    return metadata if isinstance(metadata, dict) else None


def install_matches(repository: Path, model_name: str, version: int, metadata: dict[str, Any],
                    required: Sequence[str] = ()) -> bool:
    """True when the version holds a non-empty model.onnx, every `required` file (relative to the
    version folder) and a metadata.json that is exactly `metadata`: what an exporter would
    write now is already there."""
    target = version_dir(repository, model_name, version)
    model_file = target / MODEL_FILE
    if not model_file.is_file() or model_file.stat().st_size == 0:
        return False
    if not all((target / name).is_file() for name in required):
        return False
    return read_metadata(repository, model_name, version) == metadata


@contextmanager
def staging_folder(repository: Path, model_name: str, version: int, prefix: str = ".export") -> Iterator[Path]:
    """A fresh folder next to the model's versions to write a version into, removed on exit
    (after `install_staged` it is already gone). Next to them so that the rename into place
    stays on one filesystem, which is what makes it atomic."""
    model_dir = Path(repository) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{prefix}-v{version}-", dir=model_dir))
    # mkdtemp creates the folder 0700; once renamed into place it must be as readable as any
    # other version folder (Triton's container may run as another user).
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def install_staged(staging: Path, target: Path) -> None:
    """Put the staged version folder in place of `target`: the old folder is renamed aside and
    the staged one renamed in (both renames atomic), so a reader never sees a model.onnx
    without its metadata.json or a half-written version; the old folder is then removed."""
    retired: Path | None = None
    try:
        if target.exists() or target.is_symlink():
            retired = Path(tempfile.mkdtemp(prefix=f".export-v{target.name}-old-", dir=target.parent))
            os.replace(target, retired / "previous")
        os.replace(staging, target)
    finally:
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)

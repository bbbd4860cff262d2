"""Exporting a model to ONNX and proving the export right, for every exporter in training/: a
torch module exported the one way we export (dynamo, one file), the checks that ONNX Runtime
reproduces the reference model's outputs within a tolerance, the error raised when it does
not, and installing a written graph as a model version without ever showing a half-written
one (services.common.model_versions)."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from services.common.model_versions import MODEL_FILE, METADATA_FILE, install_staged, staging_folder, version_dir


class ExportVerificationError(RuntimeError):
    """The exported graph does not reproduce the reference model (or is not the graph the
    services expect)."""


@dataclass(frozen=True)
class TorchGraph:
    """How a torch module becomes a graph: its tensor names, dynamic axes and opset (None: the
    exporter's default). `quiet` silences the exporter's user, deprecation and future warnings
    (noise for a module we export on every run)."""

    input_names: Sequence[str]
    output_names: Sequence[str]
    dynamic_shapes: Mapping[str, Any] = field(default_factory=dict)
    opset_version: int | None = None
    quiet: bool = False


def export_torch(module, example: tuple, path: Path, graph: TorchGraph) -> None:
    """Export `module` on `example` to one ONNX file (no external data) with torch's dynamo
    exporter."""
    import torch

    options: dict[str, Any] = {"opset_version": graph.opset_version} if graph.opset_version is not None else {}
    if graph.quiet:
        options["verbose"] = False
    with warnings.catch_warnings():
        # Inputs that share one Dim on purpose (same batch, same sequence) make the exporter note
        # that it names each axis once, which is what we want.
        warnings.filterwarnings("ignore", message=r"# The axis name: .* will not be used")
        if graph.quiet:
            for category in (UserWarning, DeprecationWarning, FutureWarning):
                warnings.simplefilter("ignore", category=category)
        torch.onnx.export(
            module, example, str(path), dynamo=True, dynamic_shapes=dict(graph.dynamic_shapes) or None,
            external_data=False, input_names=list(graph.input_names), output_names=list(graph.output_names),
            **options,
        )


def cpu_session(onnx_path: Path):
    """An ONNX Runtime session of the exported file on the CPU, as the checks run it."""
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def check_output(got: np.ndarray, shape: tuple[int, ...], what: str, dtype: type | None = np.float32) -> None:
    """Raise unless an ONNX output has the expected shape (and dtype, unless None)."""
    if tuple(got.shape) != tuple(shape) or (dtype is not None and got.dtype != dtype):
        expected = f"{np.dtype(dtype).name}{list(shape)}" if dtype is not None else f"{list(shape)}"
        found = f"{got.dtype}{list(got.shape)}" if dtype is not None else f"{list(got.shape)}"
        raise ExportVerificationError(f"{what} is {found}, expected {expected}")


def max_abs_difference(got: Sequence[np.ndarray], expected: Sequence[np.ndarray]) -> float:
    """The largest absolute difference over pairs of outputs (ONNX Runtime's vs the reference's)."""
    return max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(got, expected))


def require_within(worst: float, tolerance: float, reference: str, subject: str = "ONNX output") -> float:
    """`worst` when it is within `tolerance`, else ExportVerificationError naming the reference."""
    if worst > tolerance:
        raise ExportVerificationError(f"{subject} differs from {reference} by {worst:.3e} (> {tolerance:g})")
    return worst


@dataclass(frozen=True)
class VersionTarget:
    """Where a graph is installed (`<repository>/<model_name>/<version>/`) and the metadata.json
    it gets (the writer's measurements are added to it)."""

    repository: Path
    model_name: str
    version: int
    metadata: Mapping[str, Any]


def install_onnx(write: Callable[[Path], dict[str, Any]], target: VersionTarget, start: float | None = None) -> Path:
    """Install a model as `target`: ``write(staged model.onnx path)`` writes and checks the
    graph and returns what to add to the metadata. All of it happens in a staging folder
    renamed into place at the end (services.common.model_versions), so Triton and the ranking
    service never see a half-written version; on any error the previous content of the version
    folder is left untouched. Returns the installed model.onnx's path."""
    start = time.perf_counter() if start is None else start
    folder = version_dir(target.repository, target.model_name, target.version)
    with staging_folder(target.repository, target.model_name, target.version) as staging:
        metadata = {**target.metadata, **write(staging / MODEL_FILE)}
        (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        log(start, f"installing into {folder}", target.model_name)
        install_staged(staging, folder)
    log(start, f"done: {folder / MODEL_FILE}", target.model_name)
    return folder / MODEL_FILE


def log(start: float, message: str, model_name: str) -> None:
    print(f"[export {model_name} {time.perf_counter() - start:6.1f}s] {message}", flush=True)

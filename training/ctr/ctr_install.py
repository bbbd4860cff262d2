"""Installing CTR/CVR heads into the model repository: the prior written as an exact graph
(``shelfwise export``), a torch head exported and checked against torch, the graph signature
every ctr_head version has, and which versions hold what (the prior keeps version 1, heads
trained on events take the next ones). The heads themselves are training/ctr/ctr_head.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from services.common.model_versions import MODEL_FILE, next_version, read_metadata, version_dir, version_numbers
from services.ranking.features import FEATURE_NAMES
from services.ranking.scorers import FEATURE_WEIGHTS, FeatureScorer
from training.ctr.ctr_head import (
    CTR_INTERCEPT,
    CTR_SLOPE,
    CVR_INTERCEPT,
    CVR_SLOPE,
    INPUT_NAME,
    MAX_ABS_ERROR,
    MAX_EXPORT_DIFF,
    MAX_PRIOR_DIFF,
    MIN_SPEARMAN,
    MODEL_NAME,
    NUM_FEATURES,
    OPSET_VERSION,
    OUTPUT_NAMES,
    PRIOR_KIND,
    PRIOR_KIND_PREFIX,
    TRAINED_KIND,
    VERIFY_BATCH_SIZES,
    formula_scores,
    formula_weights,
    prior_logits,
    sample_features,
)
from training.onnx_export import (
    ExportVerificationError,
    TorchGraph,
    VersionTarget,
    check_output,
    cpu_session,
    export_torch,
    install_onnx,
    log,
    max_abs_difference,
    require_within,
)


def expected_metadata(version: int) -> dict[str, Any]:
    """The metadata.json keys that identify this exporter's prior (the rest are measurements)."""
    return {
        "model": MODEL_NAME,
        "version": version,
        "features": list(FEATURE_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "kind": PRIOR_KIND,
        # The weights the prior was distilled from: changing FEATURE_WEIGHTS outdates the export
        # even though the formula's version label stays the same.
        "feature_weights": {name: FEATURE_WEIGHTS[name] for name in FEATURE_NAMES},
    }


def is_ctr_head_up_to_date(model_repository: Path, version: int = 1) -> bool:
    """True when ``ctr_head/<version>/model.onnx`` exists and its metadata.json describes the
    prior this module builds now (same features, outputs, formula weights) within its gates."""
    model_file = version_dir(model_repository, MODEL_NAME, version) / MODEL_FILE
    metadata = read_metadata(model_repository, MODEL_NAME, version)
    if not model_file.is_file() or model_file.stat().st_size == 0 or metadata is None:
        return False
    if any(metadata.get(key) != value for key, value in expected_metadata(version).items()):
        return False
    spearman, max_error = metadata.get("spearman_vs_formula"), metadata.get("max_abs_error")
    return (
        isinstance(spearman, (int, float))
        and isinstance(max_error, (int, float))
        and spearman >= MIN_SPEARMAN
        and max_error <= MAX_ABS_ERROR
    )


def holds_other_model(model_repository: Path, version: int = 1) -> bool:
    """True when ``ctr_head/<version>/`` holds a model that is not a prior (e.g. a head trained
    on events), which an export of the prior must not silently replace."""
    if not (version_dir(model_repository, MODEL_NAME, version) / MODEL_FILE).is_file():
        return False
    metadata = read_metadata(model_repository, MODEL_NAME, version)
    kind = metadata.get("kind") if metadata else None
    return not (isinstance(kind, str) and kind.startswith(PRIOR_KIND_PREFIX))


def check_graph(onnx_path: Path) -> None:
    """onnx's full check, and the signature every ctr_head version has (features float32[N, 8]
    -> ctr, ctcvr float32[N, 1], batch dynamic)."""
    import onnx

    onnx.checker.check_model(str(onnx_path), full_check=True)
    graph = onnx.load(str(onnx_path)).graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value.name for value in graph.input if value.name not in initializers]
    outputs = [value.name for value in graph.output]
    if inputs != [INPUT_NAME] or outputs != list(OUTPUT_NAMES):
        raise ExportVerificationError(f"unexpected graph signature: inputs={inputs} outputs={outputs}")
    for value in list(graph.input) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise ExportVerificationError(f"{value.name}: expected float32")
        if len(dims) != 2 or dims[0].HasField("dim_value"):
            raise ExportVerificationError(f"{value.name}: batch dim must be dynamic, got {dims}")
        expected_width = NUM_FEATURES if value.name == INPUT_NAME else 1
        if dims[1].dim_value != expected_width:
            raise ExportVerificationError(f"{value.name}: expected width {expected_width}, got {dims[1]}")


def _verify_against_torch(onnx_path: Path, model: nn.Module, seed: int) -> float:
    """Max abs difference (both outputs) between ONNX Runtime and torch at VERIFY_BATCH_SIZES."""
    session = cpu_session(onnx_path)
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch in VERIFY_BATCH_SIZES:
        features = sample_features(batch, rng)
        onnx_ctr, onnx_ctcvr = session.run(list(OUTPUT_NAMES), {INPUT_NAME: features})
        with torch.no_grad():
            torch_ctr, torch_ctcvr = (t.numpy() for t in model(torch.from_numpy(features)))
        for name, got in (("ctr", onnx_ctr), ("ctcvr", onnx_ctcvr)):
            check_output(got, (batch, 1), f"batch {batch}: {name}")
        diff = max_abs_difference((onnx_ctr, onnx_ctcvr), (torch_ctr, torch_ctcvr))
        worst = max(worst, diff)
        print(f"  onnxruntime vs torch  batch={batch:<4d}  max|diff| = {diff:.3e}", flush=True)
    return require_within(worst, MAX_EXPORT_DIFF, "torch")


def prior_graph():
    """The prior as an ONNX model: features [N, 8] -> ctr, ctcvr [N, 1] (module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    def constant(name: str, value) -> "onnx.TensorProto":
        return numpy_helper.from_array(np.asarray(value, dtype=np.float32), name)

    batch = "batch"
    nodes = [
        helper.make_node("MatMul", [INPUT_NAME, "weights"], ["score"]),
        helper.make_node("Mul", ["score", "ctr_slope"], ["ctr_scaled"]),
        helper.make_node("Add", ["ctr_scaled", "ctr_intercept"], ["ctr_logit"]),
        helper.make_node("Sigmoid", ["ctr_logit"], ["ctr"]),
        helper.make_node("Mul", ["score", "cvr_slope"], ["cvr_scaled"]),
        helper.make_node("Add", ["cvr_scaled", "cvr_intercept"], ["cvr_logit"]),
        helper.make_node("Sigmoid", ["cvr_logit"], ["cvr"]),
        helper.make_node("Mul", ["ctr", "cvr"], ["ctcvr"]),
    ]
    graph = helper.make_graph(
        nodes, "ctr_head_prior",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [batch, NUM_FEATURES])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, 1]) for name in OUTPUT_NAMES],
        initializer=[
            constant("weights", formula_weights().reshape(NUM_FEATURES, 1)),
            constant("ctr_slope", CTR_SLOPE), constant("ctr_intercept", CTR_INTERCEPT),
            constant("cvr_slope", CVR_SLOPE), constant("cvr_intercept", CVR_INTERCEPT),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET_VERSION)],
                              producer_name="shelfwise.training.ctr_head")
    model.ir_version = 8  # what every Triton ONNX Runtime backend since 23.04 reads
    return model


def prior_probabilities(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ctr, ctcvr) of the prior in float64, from the formula."""
    ctr_logit, cvr_logit = prior_logits(formula_scores(features))
    ctr = 1.0 / (1.0 + np.exp(-ctr_logit))
    return ctr, ctr / (1.0 + np.exp(-cvr_logit))


def _verify_prior(onnx_path: Path, seed: int) -> tuple[float, float]:
    """(Spearman of ONNX Runtime's ctr vs the formula score, max |ONNX - formula| over both
    outputs) at VERIFY_BATCH_SIZES; raises when the graph is not the formula."""
    from scipy.stats import spearmanr

    session = cpu_session(onnx_path)
    rng = np.random.default_rng(seed)
    worst, ctrs, scores = 0.0, [], []
    for batch in VERIFY_BATCH_SIZES:
        features = sample_features(batch, rng)
        got_ctr, got_ctcvr = session.run(list(OUTPUT_NAMES), {INPUT_NAME: features})
        for name, got in (("ctr", got_ctr), ("ctcvr", got_ctcvr)):
            check_output(got, (batch, 1), f"batch {batch}: {name}")
        ctr, ctcvr = prior_probabilities(features)
        worst = max(worst, max_abs_difference((got_ctr.reshape(-1), got_ctcvr.reshape(-1)), (ctr, ctcvr)))
        ctrs.append(got_ctr.reshape(-1))
        scores.append(formula_scores(features))
    require_within(worst, MAX_PRIOR_DIFF, "the formula", subject="the prior graph")
    return float(spearmanr(np.concatenate(ctrs), np.concatenate(scores)).statistic), worst


def export_ctr_head(model_repository: Path, version: int = 1, verify: bool = True) -> Path:
    """Export the prior into ``model_repository/ctr_head/<version>/`` and return model.onnx's path.

    Always exports (use :func:`is_ctr_head_up_to_date` to skip). Raises
    :class:`ExportVerificationError`, leaving any previous version untouched, when ONNX Runtime
    does not reproduce the formula (checked even with ``verify=False``: it takes milliseconds).
    """
    import onnx

    if version < 1:
        raise ValueError(f"version must be a positive integer, got {version}")
    start = time.perf_counter()
    log_step(start, f"writing the prior: {FeatureScorer.version} as an exact graph")
    measured: dict[str, Any] = {}

    def write(staged_model: Path) -> dict[str, Any]:
        onnx.save(prior_graph(), str(staged_model))
        check_graph(staged_model)
        spearman, worst = _verify_prior(staged_model, seed=version)
        measured.update(spearman_vs_formula=round(spearman, 6), max_abs_error=float(f"{worst:.3e}"))
        log_step(start, f"onnxruntime vs the formula: max|diff| = {worst:.3e}, Spearman {spearman:.6f}")
        return dict(measured)

    return install_onnx(write, VersionTarget(Path(model_repository), MODEL_NAME, version, expected_metadata(version)), start)


def install_version(model: nn.Module, target: VersionTarget, verify: bool = True, seed: int = 0,
                    start: float | None = None) -> Path:
    """Export ``model`` (features[N, 8] -> ctr, ctcvr [N, 1]) to ONNX, check its graph and (``verify``)
    ONNX Runtime against torch, and install it as ``target`` (atomically: see
    :func:`training.onnx_export.install_onnx`)."""
    start = time.perf_counter() if start is None else start
    model = model.eval()

    def write(staged_model: Path) -> dict[str, Any]:
        # No upper bound: ranking sends up to 2000 candidates, plus 7 occlusion copies of a page.
        batch = torch.export.Dim("batch", min=1)
        example = (torch.from_numpy(sample_features(16, np.random.default_rng(0))),)
        log_step(start, f"exporting with torch.onnx.export(dynamo=True, opset {OPSET_VERSION})")
        export_torch(model, example, staged_model, TorchGraph(
            input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_shapes={"features": {0: batch}},
            opset_version=OPSET_VERSION, quiet=True,
        ))
        log_step(start, f"exported graph: {staged_model.stat().st_size / 1e3:.1f} kB; running onnx.checker")
        check_graph(staged_model)
        if not verify:
            log_step(start, "verification skipped (--no-verify)")
            return {}
        log_step(start, "verifying onnxruntime against the torch model")
        return {"onnx_vs_torch_max_abs_diff": float(f"{_verify_against_torch(staged_model, model, seed):.3e}")}

    return install_onnx(write, target, start)


def log_step(start: float, message: str) -> None:
    """A progress line of a ctr_head export, with the seconds since `start`."""
    log(start, message, MODEL_NAME)


# --- which versions hold what --------------------------------------------------------------------


def next_trained_version(model_repository: Path) -> int:
    """The version a newly trained head gets: after every existing folder, and never 1, which
    ``shelfwise export`` keeps for the distilled prior (so neither replaces the other)."""
    return next_version(model_repository, MODEL_NAME, after=1)


def latest_trained_version(model_repository: Path) -> int | None:
    """Highest version holding a head trained on events (not a distilled prior), if any."""
    for version in reversed(version_numbers(model_repository, MODEL_NAME)):
        metadata = read_metadata(model_repository, MODEL_NAME, version)
        if (metadata and metadata.get("kind") == TRAINED_KIND
                and (version_dir(model_repository, MODEL_NAME, version) / MODEL_FILE).is_file()):
            return version
    return None

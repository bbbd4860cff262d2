"""Installing a CTR/CVR head trained on logged events, of either family (the MLP towers of
training/ctr/ctr_head.py or the boosted trees of training/ctr/ctr_trees.py), as the next ctr_head
version. The one module that knows both families, so that neither imports the other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from services.common.model_versions import MODEL_FILE, version_dir
from services.ranking.features import FEATURE_NAMES
from training.ctr import ctr_trees
from training.ctr.ctr_head import (
    MLP_FAMILY,
    MODEL_NAME,
    OUTPUT_NAMES,
    POSITION_EDGES,
    TRAINED_KIND,
    PositionBiasedHead,
    ServingHead,
)
from training.ctr.ctr_install import install_version, next_trained_version
from training.onnx_export import VersionTarget


def export_trained_head(
    model: PositionBiasedHead | ctr_trees.TreeHead,
    model_repository: Path,
    report: dict[str, Any],
    version: int | None = None,
    verify: bool = True,
    serving_scale: float = 1.0,
) -> Path:
    """Install the relevance part of a trained head (the MLP :class:`PositionBiasedHead` or the
    boosted :class:`training.ctr.ctr_trees.TreeHead`) as a new ctr_head version (default: the next
    one) and return its model.onnx. metadata.json carries the kind "trained on events", the
    head's family, the position-bias tower's P(seen | bucket) (so evaluation can put position
    back) and ``report`` (window, row counts, metrics)."""
    model_repository = Path(model_repository)
    version = next_trained_version(model_repository) if version is None else version
    # Rounded once, so the graph and the metadata (which evaluation reads) hold the same number.
    serving_scale = round(float(serving_scale), 6)
    if version < 2:
        raise ValueError("version 1 is the prior's; a trained head needs version >= 2")
    folder = version_dir(model_repository, MODEL_NAME, version)
    if (folder / MODEL_FILE).exists():
        raise FileExistsError(f"{folder} already holds a model; trained heads never replace one")
    trees = isinstance(model, ctr_trees.TreeHead)
    metadata = {
        "model": MODEL_NAME,
        "version": version,
        "features": list(FEATURE_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "kind": TRAINED_KIND,
        "head": ctr_trees.FAMILY if trees else MLP_FAMILY,
        "position_bias": {
            "tower": model.position.enabled if trees else model.seen_logit is not None,
            "position_edges": list(POSITION_EDGES),
            "seen_probability": [round(float(p), 6) for p in model.seen_probabilities()],
            "serving_scale": serving_scale,
        },
        **report,
    }
    target = VersionTarget(model_repository, MODEL_NAME, version, metadata)
    if trees:
        return ctr_trees.install_tree_head(model, serving_scale, target, verify=verify)
    serving = ServingHead(model.relevance, serving_scale)
    return install_version(serving, target, verify=verify, seed=version)

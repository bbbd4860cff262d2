"""Models for tests: failing (never skipping) when `shelfwise export` has not run, and a version
of every configured model, freshly initialised through its real export function where a fresh
clone has none (models trained on a shop's events or judgments)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def require_export(version_dir: Path, *files: str) -> None:
    """Fails (never skips) when `shelfwise export` has not produced these files."""
    missing = [version_dir / name for name in ("model.onnx", *files) if not (version_dir / name).is_file()]
    if missing:
        pytest.fail(f"{', '.join(map(str, missing))} missing: run `shelfwise export` first (or `python -m training.encoders.export`)")


def _untrained_user_sequence_encoder(folder: Path) -> Path:
    from training.rec.sequential_model import ModelConfig, SequentialRecommender, export_user_encoder

    path = folder / "model.onnx"
    export_user_encoder(SequentialRecommender(ModelConfig(num_items=12), content=None), path)
    return path


def _untrained_relevance_ranker(folder: Path) -> Path:
    """A ranker fitted on random features through the real graph builder (the trained one needs
    the benchmark's judgments)."""
    import numpy as np

    from services.ranking.relevance import RELEVANCE_FEATURES
    from training.search.train_ranker import Calibration, JudgedQuery, RankerSettings, fit, ranker_graph

    rng = np.random.default_rng(0)
    queries = [
        JudgedQuery(str(q), str(q), [], rng.random((20, len(RELEVANCE_FEATURES))), rng.integers(0, 2, 20))
        for q in range(20)
    ]
    booster = fit(queries, RankerSettings(n_estimators=5, min_child_samples=5))
    path = folder / "model.onnx"
    path.write_bytes(ranker_graph(booster, Calibration(1.0, 0.0, 0.5, 0.0, 0.0)).SerializeToString())
    metadata = {"model": "relevance_ranker", "features": list(RELEVANCE_FEATURES), "threshold": 0.5}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return path


# How to get a graph of each model that `shelfwise export` may not produce: trained on a shop's
# events (`shelfwise train rec --events`) or judgments (`shelfwise train ranker`), so a fresh
# clone may have no version of it.
UNTRAINED_EXPORTS = {
    "user_sequence_encoder": _untrained_user_sequence_encoder,
    "relevance_ranker": _untrained_relevance_ranker,
}


def export_untrained(model: str, folder: Path) -> Path:
    """`folder/model.onnx`: a freshly initialised `model` through its real export function, to
    check its config and serving on a clone where nothing has been trained on events yet."""
    folder.mkdir(parents=True, exist_ok=True)
    return UNTRAINED_EXPORTS[model](folder)


def complete_model_repository(source: Path, target: Path) -> Path:
    """`source` with a version of every model it configures: exported models are linked as they
    are; a model trained on shop data that has no version yet gets version 1, freshly
    initialised. Triton tests serve this, so that they cover every config on a fresh clone."""
    from services.common.inference import TRAINED_ON_SHOP_DATA

    target.mkdir(parents=True)
    for model_dir in sorted(path.parent for path in source.glob("*/config.pbtxt")):
        exported = any(p.name.isdigit() and (p / "model.onnx").is_file() for p in model_dir.iterdir())
        if exported or model_dir.name not in TRAINED_ON_SHOP_DATA:
            (target / model_dir.name).symlink_to(model_dir, target_is_directory=True)
            continue
        (target / model_dir.name).mkdir()
        (target / model_dir.name / "config.pbtxt").write_bytes((model_dir / "config.pbtxt").read_bytes())
        export_untrained(model_dir.name, target / model_dir.name / "1")
    return target

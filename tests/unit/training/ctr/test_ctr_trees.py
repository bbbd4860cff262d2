"""The boosted-tree CTR/CVR head: its ONNX graph computes exactly what LightGBM's trees do,
its gradients are those of the product model, and `train ctr` keeps the family with the lower
validation loss."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import onnxruntime as ort
import pytest

from training.ctr import ctr_data, ctr_synthetic
from services.common.model_versions import read_metadata
from training.ctr.ctr_head import INPUT_NAME, MODEL_NAME, OUTPUT_NAMES, sample_features
from training.ctr.ctr_trees import (
    PositionTower,
    TreeSettings,
    _float32_at_most,
    _product_objective,
    bernoulli_nll,
    train_tree_head,
)
from training.ctr.train_ctr import ExportOptions, HeadChoice, train_and_export

T0 = datetime(2022, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def rows():
    events = ctr_synthetic.generate(1200, T0, model=ctr_synthetic.ClickModel(eta=1.0), seed=3)
    return ctr_data.rows_from_impressions(ctr_synthetic.records(events))


@pytest.fixture(scope="module")
def trained(rows):
    return train_tree_head(rows, TreeSettings(max_rounds=200))


def test_exported_splits_send_every_float32_input_the_way_the_float64_split_does() -> None:
    rng = np.random.default_rng(0)
    for threshold in [0.1, 1 / 3, 0.5, 0.7000000001, *rng.random(200)]:
        edge = _float32_at_most(threshold)
        assert edge <= threshold and np.float32(edge) == edge
        # The next float32 up is already past the float64 threshold.
        assert float(np.nextafter(np.float32(edge), np.float32(np.inf))) > threshold


def test_objective_gradient_is_the_derivative_of_the_product_models_loss() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 50).astype(np.float64)
    log_factor = np.log(rng.uniform(0.2, 1.0, 50))
    raw = rng.normal(size=50)
    gradient, hessian = _product_objective(lambda: log_factor, labels, base=-0.5)(raw, None)

    def total_loss(values: np.ndarray) -> float:
        return bernoulli_nll(labels, log_factor - np.logaddexp(0.0, -(-0.5 + values))) * len(labels)

    step = 1e-6
    numeric = np.array([(total_loss(raw + step * np.eye(50)[i]) - total_loss(raw - step * np.eye(50)[i])) / (2 * step)
                        for i in range(50)])
    np.testing.assert_allclose(gradient, numeric, rtol=1e-4, atol=1e-6)
    assert np.all(hessian > 0)


def test_position_tower_keeps_the_first_slot_always_examined() -> None:
    tower = PositionTower()
    buckets = np.array([0, 0, 1, 1, 2, 2])
    tower.newton_step(np.log(np.full(6, 0.5)), np.array([1, 1, 1, 0, 0, 0], dtype=float), buckets)
    seen = tower.seen_probabilities()
    assert seen[0] == 1.0 and seen[1] > seen[2]
    assert np.allclose(PositionTower(enabled=False).seen_probabilities(), 1.0)


def test_tree_head_onnx_graph_equals_the_trees_and_keeps_ctcvr_below_ctr(trained, tmp_path) -> None:
    from training.ctr.ctr_export import export_trained_head

    path = export_trained_head(trained.model, tmp_path, {"window": {}}, serving_scale=trained.serving_scale)
    metadata = read_metadata(tmp_path, MODEL_NAME, 2)
    assert metadata["head"].startswith("ESMM + PAL, gradient-boosted") and metadata["onnx_vs_trees_max_abs_diff"] <= 1e-5
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    features = sample_features(3000, np.random.default_rng(2))
    ctr, ctcvr = session.run(list(OUTPUT_NAMES), {INPUT_NAME: features})
    want_ctr, want_ctcvr = trained.model.served(features.astype(np.float64), round(trained.serving_scale, 6))
    np.testing.assert_allclose(ctr[:, 0], want_ctr, atol=1e-6)
    np.testing.assert_allclose(ctcvr[:, 0], want_ctcvr, atol=1e-6)
    assert np.all(ctcvr <= ctr) and trained.rounds["ctr"] > 0


def test_train_ctr_exports_the_family_with_the_lower_validation_loss(rows, tmp_path) -> None:
    _, report = train_and_export(rows, tmp_path, (T0, T0), choice=HeadChoice(trees=TreeSettings(max_rounds=200)),
                                 options=ExportOptions(progress=False))
    losses = {name: candidate["validation_loss"] for name, candidate in report["candidates"].items()}
    assert set(losses) == {"mlp", "trees"}
    assert report["chosen_head"] == min(losses, key=losses.get)
    assert read_metadata(tmp_path, MODEL_NAME, 2)["chosen_head"] == report["chosen_head"]

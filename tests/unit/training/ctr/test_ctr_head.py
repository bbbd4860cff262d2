"""Unit tests of training.ctr.ctr_head: the ESMM head's outputs, the prior's feature sampler and
formula, the prior written as an exact ONNX graph, and the up-to-date check (fast)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from services.ranking.features import FEATURE_NAMES
from services.ranking.scorers import FEATURE_WEIGHTS
from services.common.model_versions import read_metadata
from training.ctr.ctr_head import MODEL_NAME, CtrCvrHead, formula_scores, prior_ctr, sample_features
from training.ctr.ctr_install import (
    export_ctr_head,
    expected_metadata,
    holds_other_model,
    is_ctr_head_up_to_date,
    prior_probabilities,
)
from training.onnx_export import ExportVerificationError

COLUMN = {name: index for index, name in enumerate(FEATURE_NAMES)}


def test_head_returns_ctr_and_ctcvr_as_column_vectors() -> None:
    torch.manual_seed(0)
    ctr, ctcvr = CtrCvrHead()(torch.rand(5, len(FEATURE_NAMES)))
    assert ctr.shape == (5, 1) and ctcvr.shape == (5, 1)
    assert ctr.dtype == torch.float32 and ctcvr.dtype == torch.float32


def test_head_logits_have_one_column_per_tower() -> None:
    ctr_logit, cvr_logit = CtrCvrHead().logits(torch.rand(3, len(FEATURE_NAMES)))
    assert ctr_logit.shape == (3, 1) and cvr_logit.shape == (3, 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ctcvr_never_exceeds_ctr_and_both_are_probabilities(seed: int) -> None:
    torch.manual_seed(seed)
    model = CtrCvrHead()
    # Features outside [0, 1] too: the bound is structural, not a property of the data.
    features = torch.randn(1000, len(FEATURE_NAMES)) * 3
    with torch.no_grad():
        ctr, ctcvr = model(features)
    assert torch.all(ctcvr <= ctr)
    assert torch.all((ctr >= 0) & (ctr <= 1)) and torch.all((ctcvr >= 0) & (ctcvr <= 1))


def test_formula_scores_use_the_documented_weights() -> None:
    features = np.eye(len(FEATURE_NAMES), dtype=np.float32)
    np.testing.assert_allclose(formula_scores(features), [FEATURE_WEIGHTS[name] for name in FEATURE_NAMES])
    assert formula_scores(np.ones((1, len(FEATURE_NAMES)), dtype=np.float32))[0] == pytest.approx(sum(FEATURE_WEIGHTS.values()))


def test_prior_ctr_is_sigmoid_8s_minus_5() -> None:
    scores = np.array([0.0, 0.625, 1.0])
    np.testing.assert_allclose(prior_ctr(scores), 1 / (1 + np.exp(-(8 * scores - 5))))
    assert prior_ctr(np.array([0.625]))[0] == pytest.approx(0.5)


def test_sampled_features_look_like_ranking_features() -> None:
    features = sample_features(20_000, np.random.default_rng(0))
    assert features.shape == (20_000, len(FEATURE_NAMES)) and features.dtype == np.float32
    assert features.min() >= 0.0 and features.max() <= 1.0
    # Brand and category matches are mostly exactly 0 or 1, and mostly 0.
    for name in ("brand_match", "category_match"):
        column = features[:, COLUMN[name]]
        assert np.mean((column == 0) | (column == 1)) > 0.75
        assert np.mean(column == 0) > 0.4
    # Browse-mode rows: no text features at all.
    text = features[:, [COLUMN["dense_similarity"], COLUMN["bm25"], COLUMN["fusion"]]]
    assert np.mean(np.all(text == 0, axis=1)) > 0.05
    # The whole score range is covered, including the top of the page.
    scores = formula_scores(features)
    assert scores.min() < 0.05 and scores.max() > 0.95


def test_sampling_is_seeded() -> None:
    np.testing.assert_array_equal(
        sample_features(100, np.random.default_rng(5)), sample_features(100, np.random.default_rng(5))
    )


def test_the_prior_is_the_formula_as_an_exact_graph_exported_in_a_second(tmp_path) -> None:
    import time

    import onnxruntime as ort

    started = time.perf_counter()
    path = export_ctr_head(tmp_path, 1)
    assert time.perf_counter() - started < 60  # a bound against hangs, not a speed claim
    features = sample_features(3000, np.random.default_rng(11))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ctr, ctcvr = session.run(["ctr", "ctcvr"], {"features": features})
    want_ctr, want_ctcvr = prior_probabilities(features)
    assert np.max(np.abs(ctr.reshape(-1) - want_ctr)) < 1e-6 and np.max(np.abs(ctcvr.reshape(-1) - want_ctcvr)) < 1e-6
    metadata = read_metadata(tmp_path, MODEL_NAME, 1)
    assert metadata["kind"].startswith("prior") and metadata["max_abs_error"] < 1e-6
    assert is_ctr_head_up_to_date(tmp_path, 1) and not holds_other_model(tmp_path, 1)
    with pytest.raises(ValueError, match="positive"):
        export_ctr_head(tmp_path, 0)
    assert issubclass(ExportVerificationError, RuntimeError)


def test_an_older_distilled_prior_is_a_prior_that_a_new_export_replaces(tmp_path) -> None:
    old = {**expected_metadata(1), "kind": "prior distilled from feature-scoring/1",
           "spearman_vs_formula": 0.9999, "max_abs_error": 0.002}
    _write_version(tmp_path, old)
    assert not is_ctr_head_up_to_date(tmp_path, 1) and not holds_other_model(tmp_path, 1)


def _write_version(repository, metadata: dict) -> None:
    folder = repository / "ctr_head" / "1"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"not empty")
    (folder / "metadata.json").write_text(json.dumps(metadata))


def test_up_to_date_needs_matching_metadata_within_the_gates(tmp_path) -> None:
    assert not is_ctr_head_up_to_date(tmp_path, 1)
    good = {**expected_metadata(1), "spearman_vs_formula": 0.99999, "max_abs_error": 0.003}
    _write_version(tmp_path, good)
    assert is_ctr_head_up_to_date(tmp_path, 1)
    assert not is_ctr_head_up_to_date(tmp_path, 2)
    _write_version(tmp_path, {**good, "feature_weights": {**good["feature_weights"], "bm25": 0.5}})
    assert not is_ctr_head_up_to_date(tmp_path, 1)
    _write_version(tmp_path, {**good, "max_abs_error": 0.05})
    assert not is_ctr_head_up_to_date(tmp_path, 1)


def test_a_head_that_is_not_a_prior_is_recognised(tmp_path) -> None:
    assert not holds_other_model(tmp_path, 1)
    _write_version(tmp_path, {**expected_metadata(1), "kind": "trained on events 2025-01"})
    assert holds_other_model(tmp_path, 1)
    _write_version(tmp_path, expected_metadata(1))
    assert not holds_other_model(tmp_path, 1)

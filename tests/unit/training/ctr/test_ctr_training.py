"""The pieces of a CTR head trained on events: the position-bias tower, the loss on log
probabilities, the served (position-free) graph, and versioning that never lets a trained head
and the prior replace each other."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.ctr.ctr_export import export_trained_head
from training.ctr.ctr_head import (
    POSITION_EDGES,
    CtrCvrHead,
    PositionBiasedHead,
    ServingHead,
    bernoulli_nll,
    position_buckets,
)
from training.ctr.ctr_install import latest_trained_version, next_trained_version


def test_position_buckets_are_one_per_slot_on_the_first_pages_then_wider() -> None:
    buckets = position_buckets(np.array([1, 2, 20, 21, 24, 25, 999, 1000, 5000]))
    assert buckets.tolist() == [0, 1, 19, 19, 19, 20, 29, 30, 30]
    assert len(POSITION_EDGES) == 31


def test_first_slot_is_always_examined_and_the_rest_learned() -> None:
    model = PositionBiasedHead()
    seen = model.seen_probabilities()
    assert seen[0] == 1.0 and np.allclose(seen[1:], 0.5)
    assert np.allclose(PositionBiasedHead(position_tower=False).seen_probabilities(), 1.0)


def test_click_probability_is_examination_times_relevance_and_ctcvr_never_exceeds_it() -> None:
    torch.manual_seed(0)
    model = PositionBiasedHead()
    with torch.no_grad():
        model.seen_logit.weight[3] = -1.0
        features = torch.rand(5, 8)
        log_click, log_ctcvr = model.log_probabilities(features, torch.full((5,), 3))
        relevance, _ = model.relevance(features)
    np.testing.assert_allclose(log_click.exp().numpy(), torch.sigmoid(torch.tensor(-1.0)).item() * relevance.numpy(), rtol=1e-6)
    assert (log_ctcvr <= log_click).all()


def test_loss_on_log_probabilities_equals_binary_cross_entropy() -> None:
    probabilities = torch.tensor([[0.1], [0.5], [0.9], [0.999]])
    labels = torch.tensor([[0.0], [1.0], [1.0], [0.0]])
    expected = torch.nn.functional.binary_cross_entropy(probabilities, labels)
    assert torch.isclose(bernoulli_nll(probabilities.log(), labels), expected, rtol=1e-5)


def test_served_graph_scales_relevance_by_a_constant_and_keeps_ctcvr_below_ctr() -> None:
    relevance = CtrCvrHead()
    features = torch.rand(16, 8)
    with torch.no_grad():
        ctr, ctcvr = ServingHead(relevance, 0.25)(features)
        unscaled, _ = relevance(features)
    np.testing.assert_allclose(ctr.numpy(), 0.25 * unscaled.numpy(), rtol=1e-6)
    assert (ctcvr <= ctr).all()


def test_trained_versions_come_after_every_folder_and_never_take_the_priors_version_1(tmp_path) -> None:
    assert next_trained_version(tmp_path) == 2
    (tmp_path / "ctr_head" / "1").mkdir(parents=True)
    (tmp_path / "ctr_head" / "5").mkdir()
    assert next_trained_version(tmp_path) == 6
    assert latest_trained_version(tmp_path) is None
    with pytest.raises(ValueError):
        export_trained_head(PositionBiasedHead(), tmp_path, {}, version=1)


def test_a_trained_head_is_never_written_over_an_existing_model(tmp_path) -> None:
    folder = tmp_path / "ctr_head" / "2"
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"a trained head")
    (folder / "metadata.json").write_text(json.dumps({"kind": "trained on events"}))
    with pytest.raises(FileExistsError):
        export_trained_head(PositionBiasedHead(), tmp_path, {}, version=2)
    assert (folder / "model.onnx").read_bytes() == b"a trained head"
    assert latest_trained_version(tmp_path) == 2


def test_piecewise_linear_encoding_keeps_the_raw_feature_and_turns_point_masses_into_steps() -> None:
    from training.ctr.ctr_head import PiecewiseLinearEncoding

    rng = np.random.default_rng(0)
    data = np.column_stack([rng.random(1000), (rng.random(1000) < 0.3).astype(float)]).astype(np.float32)
    encoding = PiecewiseLinearEncoding.from_data(data, bins=4)
    assert encoding.out_features == 2 * 5
    out = encoding(torch.tensor([[0.5, 0.0], [0.5, 1.0]]))
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out[:, :2].numpy(), [[0.5, 0.0], [0.5, 1.0]])
    binary_bins = out[:, 2 + 4:].numpy()  # the binary feature's 4 bins
    assert set(np.unique(binary_bins[1])) <= {0.0, 1.0} and binary_bins[1].sum() > binary_bins[0].sum()
    uniform_bins = out[0, 2:6].numpy()  # 0.5 is about halfway: two bins full, two empty
    assert uniform_bins.sum() == pytest.approx(2.0, abs=0.15)

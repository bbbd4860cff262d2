"""The exported ranking CTR head, run the way Triton runs it, ranks like the feature scoring.

Loads ``model_repository/ctr_head/1/model.onnx`` with ONNX Runtime. Version 1 is the
documented feature scoring written as an exact graph, so on realistic feature vectors its ctr
must order candidates like s = Σ weight_f · feature_f and equal sigmoid(8 s - 5) to float32
rounding. The feature
vectors here come from this file's own seeded generator, not the training sampler. The export
is a build output: when it is missing the tests fail with "run `shelfwise export` first"
instead of skipping.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from services.ranking.features import FEATURE_NAMES
from services.ranking.scorers import FEATURE_WEIGHTS, FeatureScorer

from tests.support.models import require_export

MODEL_REPOSITORY = Path(__file__).resolve().parents[2] / "model_repository"
VERSION_DIR = MODEL_REPOSITORY / "ctr_head" / "1"
COLUMN = {name: index for index, name in enumerate(FEATURE_NAMES)}
WEIGHTS = np.array([FEATURE_WEIGHTS[name] for name in FEATURE_NAMES], dtype=np.float64)


def _require_export() -> None:
    require_export(VERSION_DIR, "metadata.json")


@pytest.fixture(scope="module")
def session():
    import onnxruntime as ort

    _require_export()
    return ort.InferenceSession(str(VERSION_DIR / "model.onnx"), providers=["CPUExecutionProvider"])


def feature_vectors(count: int, seed: int) -> np.ndarray:
    """Half uniform rows, half search-like rows (binary brand/category matches, shares for
    attributes, zero text features for browse rows)."""
    rng = np.random.default_rng(seed)
    features = rng.random((count, len(FEATURE_NAMES)))
    search = rng.random(count) < 0.5
    rows = int(search.sum())
    features[search, COLUMN["brand_match"]] = rng.random(rows) < 0.2
    features[search, COLUMN["category_match"]] = rng.random(rows) < 0.3
    features[search, COLUMN["attribute_match"]] = rng.integers(0, 3, rows) / 2
    features[search, COLUMN["popularity"]] *= rng.random(rows) < 0.6
    browse = search & (rng.random(count) < 0.2)
    features[np.ix_(browse, [COLUMN["dense_similarity"], COLUMN["bm25"], COLUMN["fusion"]])] = 0.0
    return features.astype(np.float32)


def run(session, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ctr, ctcvr = session.run(["ctr", "ctcvr"], {"features": features})
    return ctr, ctcvr


def test_graph_signature_is_features_to_ctr_and_ctcvr(session) -> None:
    assert [(i.name, i.type) for i in session.get_inputs()] == [("features", "tensor(float)")]
    assert [(o.name, o.type) for o in session.get_outputs()] == [("ctr", "tensor(float)"), ("ctcvr", "tensor(float)")]
    assert session.get_inputs()[0].shape[1] == len(FEATURE_NAMES)


def test_metadata_describes_the_prior() -> None:
    _require_export()
    metadata = json.loads((VERSION_DIR / "metadata.json").read_text())
    assert metadata["model"] == "ctr_head" and metadata["version"] == 1
    assert metadata["features"] == list(FEATURE_NAMES)
    assert metadata["outputs"] == ["ctr", "ctcvr"]
    assert metadata["kind"] == f"prior, {FeatureScorer.version} as an exact graph"
    assert metadata["spearman_vs_formula"] >= 0.999 and metadata["max_abs_error"] <= 1e-6


def test_outputs_are_probabilities_and_ctcvr_never_exceeds_ctr(session) -> None:
    features = np.concatenate(
        [feature_vectors(2000, seed=1), np.zeros((1, len(FEATURE_NAMES)), np.float32), np.ones((1, len(FEATURE_NAMES)), np.float32)]
    )
    ctr, ctcvr = run(session, features)
    assert ctr.shape == ctcvr.shape == (len(features), 1)
    assert ctr.dtype == ctcvr.dtype == np.float32
    assert np.all((ctr > 0) & (ctr < 1)) and np.all((ctcvr > 0) & (ctcvr < 1))
    assert np.all(ctcvr <= ctr)


def test_ctr_ranks_like_the_feature_scoring(session) -> None:
    features = feature_vectors(2000, seed=2)
    scores = features.astype(np.float64) @ WEIGHTS
    ctr = run(session, features)[0].reshape(-1)
    assert spearmanr(ctr, scores).statistic >= 0.999
    top_by_ctr = set(np.argsort(-ctr, kind="stable")[:10].tolist())
    top_by_formula = set(np.argsort(-scores, kind="stable")[:10].tolist())
    assert len(top_by_ctr & top_by_formula) >= 8, (sorted(top_by_ctr), sorted(top_by_formula))


def test_ctr_is_the_prior_sigmoid_of_the_feature_score(session) -> None:
    features = feature_vectors(2000, seed=3)
    scores = features.astype(np.float64) @ WEIGHTS
    ctr = run(session, features)[0].reshape(-1)
    assert np.max(np.abs(ctr - 1 / (1 + np.exp(-(8 * scores - 5))))) <= 1e-6


def test_a_row_scores_the_same_alone_and_in_a_batch_of_2000(session) -> None:
    features = feature_vectors(2000, seed=4)
    batch_ctr, batch_ctcvr = run(session, features)
    single = [run(session, features[i : i + 1]) for i in range(len(features))]
    single_ctr = np.concatenate([ctr for ctr, _ in single])
    single_ctcvr = np.concatenate([ctcvr for _, ctcvr in single])
    np.testing.assert_array_equal(single_ctr, batch_ctr)
    np.testing.assert_array_equal(single_ctcvr, batch_ctcvr)


async def test_ranking_scorer_serves_the_exported_head() -> None:
    from services.common.inference import EmbeddedOnnxRuntime
    from services.ranking.scorers import OnnxCtrHead, create_scorer

    _require_export()
    scorer = create_scorer(EmbeddedOnnxRuntime(MODEL_REPOSITORY))
    assert isinstance(scorer, OnnxCtrHead) and scorer.version == "ctr_head/1"
    features = feature_vectors(300, seed=5)
    ctr = await scorer.score(features)
    formula = await FeatureScorer().score(features)
    assert spearmanr(ctr, formula).statistic >= 0.999

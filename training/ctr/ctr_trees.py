"""The CTR/CVR head as gradient-boosted trees: the same model as the MLP head, ESMM with a PAL
position-bias tower, with each relevance tower a LightGBM ensemble instead of an MLP.

Why a second family: on logged ranking features (a handful of scores with sharp structure:
exact zeros when a retriever did not find the product, coverage exactly 1, popularity steps)
gradient-boosted trees are the stronger learner; on simulated shop traffic the MLP head ranked
within a slot like logistic regression and below LightGBM. ``shelfwise train ctr`` trains both
and keeps the one with the lower validation loss (:mod:`training.ctr.train_ctr`).

Model (the symbols of :class:`training.ctr.ctr_head.PositionBiasedHead`)::

    P(click | x, pos)           = P(seen | pos) · sigmoid(f(x))
    P(click, purchase | x, pos) = P(seen | pos) · sigmoid(f(x)) · sigmoid(g(x))

``f`` (CTR tower) and ``g`` (CVR tower) are boosted ensembles, each a base logit plus trees;
P(seen | pos) is one logit per position bucket (PAL; position 1 pinned at 1, see
``PositionBiasedHead.log_seen`` for why). Training is two boosting runs with custom objectives
(the exact gradient of the binary cross-entropy through the product, and its Fisher
information as the Hessian):

1. ``f`` on the click labels; before every boosting round the position logits take Newton
   steps given the current ``f``, so the two parts are fitted jointly (block coordinate
   descent) and position explains what only position explains;
2. ``g`` on the click-and-purchase labels over *every* impression, with P(seen | pos) ·
   sigmoid(f) fixed: conversion is modelled over the entire impression space, which is ESMM's
   remedy for training CVR on clicked rows alone. (Trees share no embedding, so ESMM's second
   idea, the shared bottom, has no counterpart here; the CVR tower gets the click model through
   its fixed factor instead.)

Each run stops early on the validation slice's loss at the shown positions, checked every
``check_every`` rounds. The export (:func:`export_tree_head`) has the MLP head's exact graph
signature: ``features`` float32 [N, 8] -> ``ctr``, ``ctcvr`` float32 [N, 1], the trees as
ONNX-ML ``TreeEnsembleRegressor`` nodes, which ONNX Runtime (embedded, and Triton's
onnxruntime backend) runs natively.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from training.ctr.ctr_data import CtrRows
from training.ctr.ctr_head import (
    INPUT_NAME,
    NUM_FEATURES,
    OUTPUT_NAMES,
    POSITION_EDGES,
    VERIFY_BATCH_SIZES,
    position_buckets,
    sample_features,
)
from training.ctr.ctr_install import check_graph, log_step
from training.onnx_export import (
    ExportVerificationError,
    VersionTarget,
    check_output,
    cpu_session,
    install_onnx,
    max_abs_difference,
    require_within,
)

FAMILY = "ESMM + PAL, gradient-boosted tree towers (LightGBM)"
ONNX_OPSET = 18
ONNX_ML_OPSET = 3
# ONNX Runtime sums the trees in float32: differences to LightGBM's float64 sums are ~1e-7.
MAX_EXPORT_DIFF = 1e-5


@dataclass(frozen=True)
class TreeSettings:
    """Boosting settings; small trees and a slow rate, because logged windows are small and
    noisy (a few thousand impressions) and early stopping picks the number of rounds."""

    learning_rate: float = 0.05
    num_leaves: int = 8
    min_data_in_leaf: int = 40
    max_rounds: int = 2000
    # Rounds without a better validation loss before stopping (the best round is kept).
    patience_rounds: int = 100
    check_every: int = 10
    position_tower: bool = True
    # Newton steps on the position logits before each boosting round of the CTR tower.
    position_steps: int = 2
    seed: int = 20241130
    threads: int = 1


def log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def bernoulli_nll(labels: np.ndarray, log_p: np.ndarray) -> float:
    """Mean binary cross-entropy given log p (as ``ctr_head.bernoulli_nll``, in numpy)."""
    log_p = np.minimum(log_p, -1e-7)
    return float(-np.mean(labels * log_p + (1.0 - labels) * np.log(-np.expm1(log_p))))


class PositionTower:
    """P(seen | position bucket) as one logit per bucket; bucket 0 (position 1) is pinned at 1."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.logits = np.zeros(len(POSITION_EDGES))

    def log_seen(self, buckets: np.ndarray) -> np.ndarray:
        if not self.enabled:
            return np.zeros(len(buckets))
        return np.where(buckets == 0, 0.0, log_sigmoid(self.logits[buckets]))

    def seen_probabilities(self) -> np.ndarray:
        return np.exp(self.log_seen(np.arange(len(POSITION_EDGES))))

    def newton_step(self, relevance_log_p: np.ndarray, labels: np.ndarray, buckets: np.ndarray) -> None:
        """One Newton step per bucket on the click loss, given log P(click | seen, x)."""
        if not self.enabled:
            return
        seen = 1.0 / (1.0 + np.exp(-self.logits[buckets]))
        relevance = np.exp(relevance_log_p)
        p = np.clip(seen * relevance, 1e-9, 1 - 1e-7)
        dp = relevance * seen * (1.0 - seen)  # d p / d logit
        gradient = dp * (-labels / p + (1.0 - labels) / (1.0 - p))
        fisher = dp * dp / (p * (1.0 - p))
        size = len(POSITION_EDGES)
        step = np.bincount(buckets, gradient, size) / (np.bincount(buckets, fisher, size) + 1e-6)
        step[0] = 0.0  # pinned
        self.logits -= np.clip(step, -2.0, 2.0)


def _product_objective(
    log_factor: Callable[[], np.ndarray], labels: np.ndarray, base: float,
    before_round: Callable[[np.ndarray], None] | None = None,
):
    """LightGBM objective for p = exp(log_factor) · sigmoid(base + trees): gradient of the
    binary cross-entropy w.r.t. the trees' raw score and the Fisher information as Hessian
    (always positive, unlike the exact second derivative of a product). ``before_round`` sees
    the current logits first (the CTR tower moves the position logits there)."""

    def objective(raw: np.ndarray, _data) -> tuple[np.ndarray, np.ndarray]:
        z = base + raw
        if before_round is not None:
            before_round(z)
        relevance = 1.0 / (1.0 + np.exp(-z))
        p = np.clip(np.exp(log_factor()) * relevance, 1e-9, 1 - 1e-7)
        dp = p * (1.0 - relevance)  # d p / d z
        gradient = dp * (-labels / p + (1.0 - labels) / (1.0 - p))
        hessian = np.maximum(dp * dp / (p * (1.0 - p)), 1e-9)
        return gradient, hessian

    return objective


@dataclass
class Tower:
    """One boosted tower: ``base`` + the first ``rounds`` trees of ``booster`` (raw logits)."""

    booster: Any  # lightgbm.Booster
    base: float
    rounds: int

    def logits(self, features: np.ndarray) -> np.ndarray:
        raw = self.booster.predict(np.asarray(features, dtype=np.float64), raw_score=True, num_iteration=self.rounds)
        return self.base + raw


@dataclass
class TreeHead:
    ctr: Tower
    cvr: Tower
    position: PositionTower

    def log_probabilities(self, features: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log P(click), log P(click and purchase)) at the positions shown."""
        log_click = self.position.log_seen(position_buckets(positions)) + log_sigmoid(self.ctr.logits(features))
        return log_click, log_click + log_sigmoid(self.cvr.logits(features))

    def served(self, features: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """What the exported graph computes, in float64: (scale · sigmoid(f), that · sigmoid(g))."""
        ctr = scale / (1.0 + np.exp(-self.ctr.logits(features)))
        return ctr, ctr / (1.0 + np.exp(-self.cvr.logits(features)))

    def seen_probabilities(self) -> np.ndarray:
        return self.position.seen_probabilities()


@dataclass
class TreeTrainResult:
    model: TreeHead
    serving_scale: float
    validation_loss: float
    validation: dict[str, float]
    rounds: dict[str, int]
    seconds: float


@dataclass(frozen=True)
class RoundHooks:
    """What runs around each boosting round: ``before_round(logits)`` (the position tower's
    Newton steps) and ``snapshot()`` of what the best round's state is (its position logits)."""

    before_round: Callable[[np.ndarray], None] | None = None
    snapshot: Callable[[], Any] | None = None


def _boost(
    features: np.ndarray,
    labels: np.ndarray,
    log_factor: Callable[[], np.ndarray],
    validation_loss: Callable[[Tower], float],
    settings: TreeSettings,
    hooks: RoundHooks = RoundHooks(),
) -> tuple[Tower, Any]:
    """Boosts one tower until the validation loss stops improving; returns the best round's
    tower and ``snapshot()`` taken at that round (the position logits, for the CTR tower)."""
    before_round, snapshot = hooks.before_round, hooks.snapshot
    import lightgbm

    rate = float(labels.mean())
    factor = float(np.exp(log_factor()).mean())
    base = _logit(rate / factor if factor > 0 else rate)
    params = {
        "objective": "none", "learning_rate": settings.learning_rate, "num_leaves": settings.num_leaves,
        "min_data_in_leaf": settings.min_data_in_leaf, "seed": settings.seed, "num_threads": settings.threads,
        "deterministic": True, "force_row_wise": True, "verbose": -1,
    }
    booster = lightgbm.Booster(params, lightgbm.Dataset(np.asarray(features, dtype=np.float64), labels, params=params))
    objective = _product_objective(log_factor, labels, base, before_round)
    best_loss, best_round, best_snapshot = float("inf"), 0, snapshot() if snapshot else None
    for round_ in range(1, settings.max_rounds + 1):
        booster.update(fobj=objective)
        if round_ % settings.check_every and round_ != settings.max_rounds:
            continue
        loss = validation_loss(Tower(booster, base, round_))
        if loss < best_loss - 1e-7:
            best_loss, best_round, best_snapshot = loss, round_, snapshot() if snapshot else None
        elif round_ - best_round >= settings.patience_rounds:
            break
    return Tower(booster, base, best_round), best_snapshot


def train_tree_head(rows: CtrRows, settings: TreeSettings = TreeSettings(), validation_fraction: float = 0.1) -> TreeTrainResult:
    """Train on ``rows`` (a time-ordered window); its latest ``validation_fraction`` of
    impressions picks each tower's number of rounds, as for the MLP head."""
    from sklearn.metrics import roc_auc_score

    start = time.perf_counter()
    fit, held_out = rows.split_tail(validation_fraction)
    for part, what in ((fit, "training"), (held_out, "validation")):
        clicks = int(part.clicks.sum())
        if len(part) == 0 or clicks in (0, len(part)):
            raise ValueError(f"the {what} rows need both clicked and unclicked products (clicks: {clicks} of {len(part)})")
    fit_buckets, held_out_buckets = position_buckets(fit.positions), position_buckets(held_out.positions)
    clicks, purchases = fit.clicks.astype(np.float64), fit.purchases.astype(np.float64)
    position = PositionTower(settings.position_tower)

    def move_position(ctr_logits: np.ndarray) -> None:
        for _ in range(settings.position_steps):
            position.newton_step(log_sigmoid(ctr_logits), clicks, fit_buckets)

    ctr, best_logits = _boost(
        fit.features, clicks, lambda: position.log_seen(fit_buckets),
        lambda tower: bernoulli_nll(held_out.clicks, position.log_seen(held_out_buckets) + log_sigmoid(tower.logits(held_out.features))),
        settings, RoundHooks(before_round=move_position if settings.position_tower else None,
                             snapshot=lambda: position.logits.copy()),
    )
    position.logits = best_logits
    # The CVR tower's fixed factor: P(click | x, pos) of the trained CTR part.
    click_log_p = position.log_seen(fit_buckets) + log_sigmoid(ctr.logits(fit.features))
    held_out_click_log_p = position.log_seen(held_out_buckets) + log_sigmoid(ctr.logits(held_out.features))
    cvr, _ = _boost(
        fit.features, purchases, lambda: click_log_p,
        lambda tower: bernoulli_nll(held_out.purchases, held_out_click_log_p + log_sigmoid(tower.logits(held_out.features))),
        settings,
    )
    model = TreeHead(ctr, cvr, position)
    serving_scale = float(np.mean(position.seen_probabilities()[fit_buckets]))
    log_click, log_ctcvr = model.log_probabilities(held_out.features, held_out.positions)
    click_loss, purchase_loss = bernoulli_nll(held_out.clicks, log_click), bernoulli_nll(held_out.purchases, log_ctcvr)
    served_ctr, served_ctcvr = model.served(held_out.features, serving_scale)
    validation = {
        "click_log_loss_at_shown_position": round(click_loss, 6),
        "purchase_log_loss_at_shown_position": round(purchase_loss, 6),
    }
    if 0 < held_out.clicks.sum() < len(held_out):
        validation["ctr_auc_served"] = round(float(roc_auc_score(held_out.clicks, served_ctr)), 6)
        validation["ctr_auc_with_position"] = round(float(roc_auc_score(held_out.clicks, log_click)), 6)
    if 0 < held_out.purchases.sum() < len(held_out):
        validation["ctcvr_auc_served"] = round(float(roc_auc_score(held_out.purchases, served_ctcvr)), 6)
        validation["ctcvr_auc_with_position"] = round(float(roc_auc_score(held_out.purchases, log_ctcvr)), 6)
    return TreeTrainResult(
        model, serving_scale, click_loss + purchase_loss, validation,
        {"ctr": ctr.rounds, "cvr": cvr.rounds}, time.perf_counter() - start,
    )


# --- ONNX --------------------------------------------------------------------------------------


def _float32_at_most(threshold: float) -> float:
    """The largest float32 <= threshold: for every float32 x, x <= it exactly when x <= threshold,
    so the exported split sends each float32 input the way LightGBM's float64 split does."""
    rounded = np.float32(threshold)
    if float(rounded) > threshold:
        rounded = np.nextafter(rounded, np.float32(-np.inf))
    return float(rounded)


def tree_ensemble_node(tower: Tower, input_name: str, output_name: str):
    """An ONNX-ML TreeEnsembleRegressor computing ``tower``'s raw logit [N, 1] from LightGBM's
    model dump (numerical "<=" splits only: the head declares no categorical feature)."""
    from onnx import helper

    attributes: dict[str, list] = {key: [] for key in (
        "nodes_treeids", "nodes_nodeids", "nodes_featureids", "nodes_values", "nodes_modes",
        "nodes_truenodeids", "nodes_falsenodeids", "nodes_missing_value_tracks_true",
        "target_treeids", "target_nodeids", "target_ids", "target_weights",
    )}
    dump = tower.booster.dump_model(num_iteration=tower.rounds)
    for tree_id, tree in enumerate(dump["tree_info"][: tower.rounds]):
        counter = iter(range(1 << 30))

        def visit(node: dict) -> int:
            node_id = next(counter)
            attributes["nodes_treeids"].append(tree_id)
            attributes["nodes_nodeids"].append(node_id)
            if "leaf_value" in node:
                for key, value in (("nodes_featureids", 0), ("nodes_values", 0.0), ("nodes_modes", "LEAF"),
                                   ("nodes_truenodeids", 0), ("nodes_falsenodeids", 0),
                                   ("nodes_missing_value_tracks_true", 0)):
                    attributes[key].append(value)
                attributes["target_treeids"].append(tree_id)
                attributes["target_nodeids"].append(node_id)
                attributes["target_ids"].append(0)
                attributes["target_weights"].append(float(node["leaf_value"]))
                return node_id
            if node.get("decision_type") != "<=":
                raise ExportVerificationError(f"tree {tree_id}: unsupported split {node.get('decision_type')!r}")
            slot = len(attributes["nodes_modes"])
            attributes["nodes_featureids"].append(int(node["split_feature"]))
            attributes["nodes_values"].append(_float32_at_most(float(node["threshold"])))
            attributes["nodes_modes"].append("BRANCH_LEQ")
            attributes["nodes_truenodeids"].append(0)
            attributes["nodes_falsenodeids"].append(0)
            # Only NaN reaches this (features are finite at serving); follow LightGBM's default side.
            attributes["nodes_missing_value_tracks_true"].append(int(bool(node.get("default_left", True))))
            attributes["nodes_truenodeids"][slot] = visit(node["left_child"])
            attributes["nodes_falsenodeids"][slot] = visit(node["right_child"])
            return node_id

        visit(tree["tree_structure"])
    return helper.make_node(
        "TreeEnsembleRegressor", [input_name], [output_name], domain="ai.onnx.ml",
        n_targets=1, aggregate_function="SUM", base_values=[float(tower.base)], post_transform="NONE",
        **attributes,
    )


def tree_head_graph(model: TreeHead, scale: float):
    """The served graph: ctr = scale · sigmoid(f(x)), ctcvr = ctr · sigmoid(g(x))."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        tree_ensemble_node(model.ctr, INPUT_NAME, "ctr_logit"),
        tree_ensemble_node(model.cvr, INPUT_NAME, "cvr_logit"),
        helper.make_node("Sigmoid", ["ctr_logit"], ["ctr_relevance"]),
        helper.make_node("Mul", ["ctr_relevance", "serving_scale"], [OUTPUT_NAMES[0]]),
        helper.make_node("Sigmoid", ["cvr_logit"], ["cvr"]),
        helper.make_node("Mul", [OUTPUT_NAMES[0], "cvr"], [OUTPUT_NAMES[1]]),
    ]
    graph = helper.make_graph(
        nodes, "ctr_head_trees",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", NUM_FEATURES])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1]) for name in OUTPUT_NAMES],
        initializer=[helper.make_tensor("serving_scale", TensorProto.FLOAT, [1, 1], [float(scale)])],
    )
    proto = helper.make_model(
        graph, producer_name="shelfwise.training.ctr_trees",
        opset_imports=[helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid("ai.onnx.ml", ONNX_ML_OPSET)],
    )
    # The version ONNX Runtime 1.x and Triton's onnxruntime backend read without complaint.
    proto.ir_version = min(proto.ir_version, 9)
    onnx.checker.check_model(proto, full_check=True)
    return proto


def verify_onnx(onnx_path: Path, model: TreeHead, scale: float, seed: int, extra: np.ndarray | None = None) -> float:
    """Max abs difference between ONNX Runtime and the Python model on sampled feature rows at
    VERIFY_BATCH_SIZES (and on ``extra`` rows, e.g. the logged ones)."""
    session = cpu_session(onnx_path)
    rng = np.random.default_rng(seed)
    batches = [sample_features(size, rng) for size in VERIFY_BATCH_SIZES]
    if extra is not None and len(extra):
        batches.append(np.asarray(extra, dtype=np.float32))
    worst = 0.0
    for features in batches:
        got_ctr, got_ctcvr = session.run(list(OUTPUT_NAMES), {INPUT_NAME: features})
        check_output(got_ctr, (len(features), 1), "ctr")
        want_ctr, want_ctcvr = model.served(features.astype(np.float64), scale)
        worst = max(worst, max_abs_difference((got_ctr[:, 0], got_ctcvr[:, 0]), (want_ctr, want_ctcvr)))
    return require_within(worst, MAX_EXPORT_DIFF, "the trees")


def install_tree_head(model: TreeHead, scale: float, target: VersionTarget, verify: bool = True) -> Path:
    """Write the graph, check it as every ctr_head version is checked, verify ONNX Runtime
    against the Python trees (``verify``) and install it atomically."""
    import onnx

    start = time.perf_counter()

    def write(staged_model: Path) -> dict[str, Any]:
        proto = tree_head_graph(model, scale)
        onnx.save(proto, str(staged_model))
        log_step(start, f"tree graph: {staged_model.stat().st_size / 1e3:.1f} kB "
                    f"({model.ctr.rounds} + {model.cvr.rounds} trees); running onnx.checker")
        check_graph(staged_model)
        if not verify:
            return {}
        log_step(start, "verifying onnxruntime against the trees")
        return {"onnx_vs_trees_max_abs_diff": float(f"{verify_onnx(staged_model, model, scale, seed=target.version):.3e}")}

    return install_onnx(write, target, start)

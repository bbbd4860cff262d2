"""`shelfwise eval ctr`: the trained CTR/CVR head against logistic regression and LightGBM on a
later time window than it was trained on, side by side.

The head under test is an exported ``ctr_head`` version (default: the latest trained on
events), run through ONNX Runtime from ``model_repository/`` exactly as serving runs it. The
baselines are fitted here on the head's own training window (read from its metadata.json),
with LightGBM early-stopped on the same latest-impressions validation slice the head stopped
on; nothing is fitted or tuned on the evaluation window, which must start at or after the end
of the training window.

Rows, for the click task (label: clicked) and the purchase task (label: clicked and bought,
over every impression, scored by ctcvr):

* ``ours`` : the served head, position removed (what ranking sees);
* ``ours x position tower``: the served score times P(seen | position) from metadata.json,
  i.e. the trained PAL model at the position the item was actually shown;
* ``prior`` : ctr_head version 1, the feature scoring as an exact graph, not trained on events;
* logistic regression and LightGBM on the same 8 features, and on the features + position.

Columns: AUC and the position-stratified AUC (the AUC within each position bucket, averaged
with the bucket's positives as weights: it compares products only with others shown at the
same slot, so the logging policy's ordering cannot inflate it), each with a 95 % bootstrap
interval (impressions resampled, so the rows of one page stay together) and its difference to
the like-for-like LightGBM (on the features for position-free rows, on features + position
for rows that use position) with a paired interval (the same resamples for every row); and
log-loss.

On labels logged under position bias, plain AUC rewards a position-free model for learning the
logging policy's ordering (what ranked high got examined and clicked); a head that removes
position is meant not to do that, so compare it with both the plain and the stratified AUC.

Usage::

    shelfwise eval ctr [--version N] [--since T] [--until T] [--bootstrap 200]
                       [--out build/reports/ctr_eval.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from services.common.model_versions import read_metadata, version_dir
from training.ctr import ctr_data, ctr_head, ctr_install
from training.ctr.ctr_data import CtrRows
from training.stats import Resampling, cluster_weights, percentile_interval

LIGHTGBM = "LightGBM"
DEFAULT_BOOTSTRAP = 200
TASKS = (("click", "clicks", "ctr"), ("purchase", "purchases", "ctcvr"))


# --- metrics -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RankedScores:
    """Scores sorted once, so each bootstrap AUC is a weighted O(N) pass, not a new sort."""

    order: np.ndarray
    labels: np.ndarray  # in sorted order
    groups: np.ndarray  # tie group of each sorted row

    @classmethod
    def of(cls, labels: np.ndarray, scores: np.ndarray) -> "RankedScores":
        order = np.argsort(scores, kind="mergesort")
        ranked = np.asarray(scores)[order]
        groups = np.concatenate([[0], np.cumsum(ranked[1:] != ranked[:-1])]).astype(np.int64)
        return cls(order, np.asarray(labels, dtype=np.float64)[order], groups)

    def auc(self, weights: np.ndarray | None = None) -> float:
        """Weighted Mann-Whitney AUC (ties count half); ``weights`` per original row."""
        w = np.ones(len(self.order)) if weights is None else np.asarray(weights, dtype=np.float64)[self.order]
        positives = np.bincount(self.groups, w * self.labels)
        negatives = np.bincount(self.groups, w * (1.0 - self.labels))
        below = np.cumsum(negatives) - negatives
        denominator = positives.sum() * negatives.sum()
        return float((positives * (below + 0.5 * negatives)).sum() / denominator) if denominator > 0 else float("nan")


class StratifiedScores:
    """Position-stratified AUC: the AUC within each position bucket, averaged with the
    bucket's (weighted) positives as weights; buckets without both classes are left out."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray, positions: np.ndarray):
        buckets = ctr_head.position_buckets(positions)
        self._parts = []
        for bucket in np.unique(buckets):
            rows = np.flatnonzero(buckets == bucket)
            self._parts.append((rows, RankedScores.of(labels[rows], scores[rows]), labels[rows]))

    def auc(self, weights: np.ndarray | None = None) -> float:
        total = weight = 0.0
        for rows, ranked, labels in self._parts:
            w = np.ones(len(rows)) if weights is None else weights[rows]
            positives, negatives = float((w * labels).sum()), float((w * (1.0 - labels)).sum())
            if positives > 0 and negatives > 0:
                total += positives * ranked.auc(w)
                weight += positives
        return total / weight if weight else float("nan")


def stratified_auc(labels: np.ndarray, scores: np.ndarray, positions: np.ndarray) -> float:
    """AUC within each position bucket, averaged with the bucket's positives as weights."""
    return StratifiedScores(np.asarray(labels, dtype=np.float64), np.asarray(scores), np.asarray(positions)).auc()


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    from sklearn.metrics import log_loss as sklearn_log_loss

    clipped = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    return float(sklearn_log_loss(labels, clipped, labels=[0, 1]))


@dataclass(frozen=True)
class Scored:
    """One model's probabilities on the evaluation rows; ``reference`` names the row it is
    compared with like for like (the LightGBM on the same inputs), None for a reference."""

    model: str
    probabilities: np.ndarray
    note: str = ""
    reference: str | None = None


@dataclass
class Metric:
    value: float
    interval: tuple[float, float]
    # Minus the reference's value, on the same resamples (paired); None for a reference row.
    delta: float | None = None
    delta_interval: tuple[float, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "value": self.value, "95": list(self.interval),
            "minus_reference": self.delta,
            "minus_reference_95": list(self.delta_interval) if self.delta_interval else None,
        }


@dataclass
class Row:
    task: str
    model: str
    reference: str | None
    auc: Metric
    stratified_auc: Metric
    log_loss: float
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "task": self.task, "model": self.model, "reference": self.reference, "auc": self.auc.as_dict(),
            "position_stratified_auc": self.stratified_auc.as_dict(), "log_loss": self.log_loss, "note": self.note,
        }


def score_rows(
    task: str, labels: np.ndarray, positions: np.ndarray, impression: np.ndarray,
    scored: Sequence[Scored], resampling: Resampling,
) -> list[Row]:
    """One Row per scored model: AUC and position-stratified AUC with clustered-bootstrap
    intervals, their paired differences to the row's reference, and log-loss."""
    labels = np.asarray(labels, dtype=np.float64)
    metrics = {
        "auc": {s.model: RankedScores.of(labels, s.probabilities) for s in scored},
        "stratified": {s.model: StratifiedScores(labels, s.probabilities, positions) for s in scored},
    }
    # The same resamples for every model and metric: the differences below are paired.
    draws: dict[str, dict[str, list[float]]] = {kind: {s.model: [] for s in scored} for kind in metrics}
    # A clustered bootstrap: whole impressions (pages) are drawn, never single rows.
    for weights in cluster_weights(impression, resampling.samples, resampling.seed):
        for kind, by_model in metrics.items():
            for model, computer in by_model.items():
                draws[kind][model].append(computer.auc(weights))

    def metric(kind: str, item: Scored) -> Metric:
        value = metrics[kind][item.model].auc()
        result = Metric(value, percentile_interval(draws[kind][item.model], finite_only=True))
        if item.reference is not None and item.reference in metrics[kind]:
            result.delta = value - metrics[kind][item.reference].auc()
            result.delta_interval = percentile_interval(
                np.array(draws[kind][item.model]) - np.array(draws[kind][item.reference]), finite_only=True)
        return result

    return [
        Row(task, item.model, item.reference, metric("auc", item), metric("stratified", item),
            log_loss(labels, item.probabilities), item.note)
        for item in scored
    ]


# --- baselines ----------------------------------------------------------------------------------


def baseline_inputs(rows: CtrRows, with_position: bool, log_position: bool) -> np.ndarray:
    if not with_position:
        return rows.features.astype(np.float64)
    position = np.log(rows.positions) if log_position else rows.positions
    return np.column_stack([rows.features.astype(np.float64), position])


def fit_baselines(
    train: CtrRows, validation_fraction: float, label: str, threads: int, seed: int
) -> dict[str, Callable[[CtrRows], np.ndarray]]:
    """Logistic regression and LightGBM, each on the features and on features + position,
    fitted on the head's training rows; LightGBM stops early on the head's validation slice."""
    import lightgbm
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fit, held_out = train.split_tail(validation_fraction)
    y_fit, y_held_out = getattr(fit, label), getattr(held_out, label)
    models: dict[str, Callable[[CtrRows], np.ndarray]] = {}
    for with_position, suffix in ((False, "features"), (True, "features + position")):
        # A logit linear in log(position) is the usual power-law examination curve.
        regression = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2_000))
        regression.fit(baseline_inputs(fit, with_position, log_position=True), y_fit)
        models[f"logistic regression ({suffix})"] = (
            lambda rows, m=regression, p=with_position: m.predict_proba(baseline_inputs(rows, p, True))[:, 1]
        )
        booster = lightgbm.LGBMClassifier(
            n_estimators=2_000, learning_rate=0.05, num_leaves=31, min_child_samples=50,
            n_jobs=threads, random_state=seed, verbose=-1,
        )
        booster.fit(
            baseline_inputs(fit, with_position, log_position=False), y_fit,
            eval_X=(baseline_inputs(held_out, with_position, log_position=False),), eval_y=(y_held_out,),
            callbacks=[lightgbm.early_stopping(50, verbose=False)],
        )
        models[f"LightGBM ({suffix})"] = (
            lambda rows, m=booster, p=with_position: m.predict_proba(baseline_inputs(rows, p, False))[:, 1]
        )
    return models


# --- the exported heads -------------------------------------------------------------------------


def run_head(model_repository: Path, version: int, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ctr, ctcvr) of the exported ctr_head/<version> through ONNX Runtime, float64 [N]."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        str(version_dir(model_repository, ctr_head.MODEL_NAME, version) / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    outputs = [np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32)]
    chunks = [session.run(list(ctr_head.OUTPUT_NAMES), {ctr_head.INPUT_NAME: features[i:i + 4096]})
              for i in range(0, len(features), 4096)] or [outputs]
    ctr = np.concatenate([c[0] for c in chunks]).reshape(-1).astype(np.float64)
    ctcvr = np.concatenate([c[1] for c in chunks]).reshape(-1).astype(np.float64)
    return ctr, ctcvr


def with_position(metadata: dict[str, Any], served: np.ndarray, positions: np.ndarray) -> np.ndarray | None:
    """The served score put back at the position shown: score / serving_scale · P(seen | pos)."""
    bias = metadata.get("position_bias") or {}
    if not bias.get("tower"):
        return None
    if list(bias["position_edges"]) != list(ctr_head.POSITION_EDGES):
        raise ValueError("the head's position buckets differ from this code's; re-train it")
    seen = np.asarray(bias["seen_probability"], dtype=np.float64)[ctr_head.position_buckets(positions)]
    return served / float(bias["serving_scale"]) * seen


# --- the command --------------------------------------------------------------------------------


@dataclass
class Evaluation:
    rows: list[Row]
    report: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalSettings:
    """Bootstrap resamples and their seed, the baselines' threads, progress bars."""

    resamples: int = DEFAULT_BOOTSTRAP
    threads: int = 1
    seed: int = 0
    progress: bool = True


def evaluate(train: CtrRows, test: CtrRows, model_repository: Path, version: int,
             settings: EvalSettings = EvalSettings()) -> Evaluation:
    """Every row of the comparison (see the module docstring) on ``test``; baselines fit on ``train``."""
    resamples, threads, seed, progress = settings.resamples, settings.threads, settings.seed, settings.progress
    from tqdm.auto import tqdm

    metadata = read_metadata(model_repository, ctr_head.MODEL_NAME, version) or {}
    validation_fraction = float((metadata.get("settings") or {}).get("validation_fraction", 0.1))
    served = dict(zip(("ctr", "ctcvr"), run_head(model_repository, version, test.features)))
    prior = None
    if version != 1 and (version_dir(model_repository, ctr_head.MODEL_NAME, 1) / "model.onnx").is_file() and not ctr_install.holds_other_model(model_repository, 1):
        prior = dict(zip(("ctr", "ctcvr"), run_head(model_repository, 1, test.features)))
    rows: list[Row] = []
    skipped: list[str] = []
    for task, label, output in tqdm(TASKS, desc="eval ctr", unit="task", disable=not progress, leave=False):
        labels, train_labels = getattr(test, label), getattr(train, label)
        if not 0 < labels.sum() < len(labels) or not 0 < train_labels.sum() < len(train_labels):
            skipped.append(f"{task}: no positives (or no negatives) in the training or evaluation window")
            continue
        like_for_like = f"{LIGHTGBM} (features)", f"{LIGHTGBM} (features + position)"
        scored = [Scored(f"ours: ctr_head v{version} {output} (position removed, as served)", served[output],
                         "ONNX Runtime, as ranking runs it", like_for_like[0])]
        positioned = with_position(metadata, served[output], test.positions)
        if positioned is not None:
            scored.append(Scored(f"ours: ctr_head v{version} {output} x position tower", positioned,
                                 "served score x P(seen | position) from metadata.json", like_for_like[1]))
        if prior is not None:
            scored.append(Scored(f"prior: ctr_head v1 {output} (the feature scoring)", prior[output],
                                 "not trained on events; log-loss not calibrated to this shop", like_for_like[0]))
        for name, predict in fit_baselines(train, validation_fraction, label, threads, seed).items():
            reference = None if name in like_for_like else like_for_like["position" in name]
            scored.append(Scored(name, predict(test), "fitted on the head's training window", reference))
        rows += score_rows(task, labels, test.positions, test.impression, scored, Resampling(resamples, seed))
    report = {
        "model": ctr_head.MODEL_NAME, "version": version, "bootstrap_resamples": resamples,
        "skipped_tasks": skipped, "rows": [row.as_dict() for row in rows],
    }
    return Evaluation(rows, report)


def format_table(rows: Sequence[Row]) -> str:
    """One line per row; differences are to the row's like-for-like LightGBM (marked in "vs")."""
    tags = {f"{LIGHTGBM} (features)": "F", f"{LIGHTGBM} (features + position)": "F+P"}

    def cell(metric: Metric) -> str:
        return f"{metric.value:.4f} [{metric.interval[0]:.4f}, {metric.interval[1]:.4f}]"

    def delta(metric: Metric) -> str:
        if metric.delta is None:
            return "(reference)"
        return f"{metric.delta:+.4f} [{metric.delta_interval[0]:+.4f}, {metric.delta_interval[1]:+.4f}]"

    header = (f"{'task':<9} {'model':<62} {'vs':<4} {'AUC [95% CI]':<24} {'AUC - vs [95% CI]':<27} "
              f"{'pos-strat AUC [95% CI]':<24} {'pos-strat - vs [95% CI]':<27} {'log-loss':>8}")
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(
            f"{row.task:<9} {row.model:<62} {tags.get(row.reference, ''):<4} {cell(row.auc):<24} {delta(row.auc):<27} "
            f"{cell(row.stratified_auc):<24} {delta(row.stratified_auc):<27} {row.log_loss:>8.4f}"
        )
    lines.append('vs: F = LightGBM (features), F+P = LightGBM (features + position), on the same resamples (paired).')
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelfwise eval ctr",
        description="AUC and log-loss of the trained CTR/CVR head vs logistic regression and LightGBM on a later window.",
    )
    parser.add_argument("--database-url", default=None, help="PostgreSQL DSN (default: SHELFWISE_DATABASE_URL)")
    parser.add_argument("--repository", type=Path, default=None, help="model repository (default: SHELFWISE_MODEL_REPOSITORY)")
    parser.add_argument("--version", type=int, default=None, help="ctr_head version (default: the latest trained on events)")
    parser.add_argument("--since", type=ctr_data.parse_time, default=None,
                        help="evaluation window start (default: the end of the head's training window)")
    parser.add_argument("--until", type=ctr_data.parse_time, default=None, help="evaluation window end (default: now)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_BOOTSTRAP, help="bootstrap resamples (default: 200)")
    parser.add_argument("--out", type=Path, default=Path("build/reports/ctr_eval.json"))
    parser.add_argument("--threads", type=int, default=1, help="LightGBM threads (default: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from services.common.config import database_url, model_repository

    args = build_parser().parse_args(argv)
    repository = args.repository or model_repository()
    version = args.version or ctr_install.latest_trained_version(repository)
    if version is None:
        print(f"error: no ctr_head trained on events in {repository}: run `shelfwise train ctr --until <time>` first",
              file=sys.stderr)
        return 2
    metadata = read_metadata(repository, ctr_head.MODEL_NAME, version)
    window = (metadata or {}).get("window")
    if not window:
        print(f"error: ctr_head/{version} has no training window in its metadata (not trained on events)", file=sys.stderr)
        return 2
    train_since, train_until = ctr_data.parse_time(window["since"].rstrip("Z")), ctr_data.parse_time(window["until"].rstrip("Z"))
    since = args.since or train_until
    until = args.until or datetime.now(timezone.utc)
    if since < train_until:
        print(f"error: the evaluation window starts at {ctr_data.as_utc_text(since)}, before the head's training window "
              f"ends ({window['until']}): evaluate on a later window", file=sys.stderr)
        return 2
    attribution = timedelta(hours=float(metadata.get("attribution_hours", 24)))
    dsn = args.database_url or database_url()
    start = time.perf_counter()

    async def read() -> tuple[CtrRows, CtrRows]:
        train = await ctr_data.read_rows(dsn, train_since, train_until, attribution, not args.quiet, "read training window")
        test = await ctr_data.read_rows(dsn, since, until, attribution, not args.quiet, "read evaluation window")
        return train, test

    train, test = asyncio.run(read())
    if len(test) == 0:
        print(f"error: no impressions with features in the evaluation window [{ctr_data.as_utc_text(since)}, "
              f"{ctr_data.as_utc_text(until)})", file=sys.stderr)
        return 2
    evaluation = evaluate(train, test, repository, version,
                          EvalSettings(args.bootstrap, args.threads, args.seed, progress=not args.quiet))
    report = {
        **evaluation.report,
        "training_window": window,
        "evaluation_window": {"since": ctr_data.as_utc_text(since), "until": ctr_data.as_utc_text(until)},
        "attribution_hours": attribution.total_seconds() / 3600,
        "training_rows": train.summary(),
        "evaluation_rows": test.summary(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(f"ctr_head v{version}: trained on [{window['since']}, {window['until']}) "
          f"({train.impressions} impressions); evaluated on [{report['evaluation_window']['since']}, "
          f"{report['evaluation_window']['until']}): {test.impressions} impressions, {len(test)} products shown, "
          f"{int(test.clicks.sum())} clicks, {int(test.purchases.sum())} purchases")
    print(format_table(evaluation.rows))
    for note in evaluation.report["skipped_tasks"]:
        print(f"skipped {note}")
    print("click task: scores are ctr; purchase task: ctcvr = P(click and purchase | impression). Baselines are fitted on "
          "the head's training window. Position-stratified AUC compares products only within the same slot.")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

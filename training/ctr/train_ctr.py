"""`shelfwise train ctr`: train the ranking CTR/CVR head on the shop's logged impressions and
export it as the next ``ctr_head`` version.

Data: :mod:`training.ctr.ctr_data` (one row per product shown: the served ranking features, its
position, click and purchase labels) for impressions in ``[--since, --until)``. The latest
``--validation-fraction`` of those impressions (by time) is held out for early stopping, so
the stopping point is chosen on data that comes after its training rows, as the evaluation
window will.

Model: ESMM (CTR tower, CVR tower over the whole impression space, ctcvr = ctr · cvr) times a
PAL position-bias tower P(seen | position), with binary cross-entropy on click and on
click-and-purchase, in two families: MLP towers (:class:`training.ctr.ctr_head.PositionBiasedHead`,
trained jointly) and gradient-boosted tree towers (:mod:`training.ctr.ctr_trees`). ``--head auto``
(the default) trains both and exports the one with the lower validation loss. Only the
position-free relevance part is exported (``ctr_head.ServingHead``), with the prior's exact
graph signature (``features`` float32 [N, 8] -> ``ctr``, ``ctcvr`` float32 [N, 1]); the
position tower's P(seen | bucket) goes into metadata.json, so ``shelfwise eval ctr`` can put
position back for a like-for-like comparison.

Export: a new version folder (after every existing one, never 1, which holds the
prior), written atomically with its metadata (kind "trained on events", window, row counts,
validation metrics) after onnx.checker and ONNX Runtime vs torch checks. The ranking service
serves the highest version; restart it to load the new head.

Usage::

    shelfwise train ctr [--database-url URL] [--since 2026-10-01] [--until 2026-11-01]
                        [--out model_repository] [--head auto|trees|mlp] [--no-position-tower]
                        [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from training.ctr import ctr_data
from training.ctr.ctr_data import CtrRows
from training.ctr.ctr_head import (
    CtrCvrHead,
    PiecewiseLinearEncoding,
    PositionBiasedHead,
    ServingHead,
    bernoulli_nll,
    position_buckets,
)
from training.ctr.ctr_export import export_trained_head
from training.ctr.ctr_trees import TreeSettings


@dataclass(frozen=True)
class TrainSettings:
    """Hyper-parameters; the defaults train a 100k-row window in well under a minute on 1 core."""

    max_epochs: int = 60
    batch_size: int = 1024
    learning_rate: float = 3e-3
    weight_decay: float = 1e-5
    # Epochs without a better validation loss before stopping (the best epoch is kept).
    patience: int = 4
    validation_fraction: float = 0.1
    position_tower: bool = True
    # Quantile bins of the piecewise-linear input encoding (0: raw features only).
    bins: int = 16
    seed: int = 20241130


@dataclass
class TrainResult:
    model: PositionBiasedHead
    serving_scale: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, float]]
    validation: dict[str, float]
    seconds: float


def tensors(rows: CtrRows) -> tuple[torch.Tensor, ...]:
    """(features, position buckets, clicks [N, 1], purchases [N, 1])."""
    return (
        torch.from_numpy(np.ascontiguousarray(rows.features, dtype=np.float32)),
        torch.from_numpy(position_buckets(rows.positions)).unsqueeze(1),
        torch.from_numpy(rows.clicks.astype(np.float32)).unsqueeze(1),
        torch.from_numpy(rows.purchases.astype(np.float32)).unsqueeze(1),
    )


def loss_terms(model: PositionBiasedHead, features, buckets, clicks, purchases) -> tuple[torch.Tensor, torch.Tensor]:
    """(click NLL, click-and-purchase NLL) at the positions shown. The CVR tower learns only
    through the second term, over every impression: ESMM's remedy for the sample-selection bias
    of training CVR on clicked rows alone."""
    log_click, log_ctcvr = model.log_probabilities(features, buckets.squeeze(1))
    return bernoulli_nll(log_click, clicks), bernoulli_nll(log_ctcvr, purchases)


def _check_trainable(rows: CtrRows, what: str) -> None:
    if len(rows) == 0:
        raise ValueError(f"no {what} rows: no impressions with logged features in the window")
    clicks = int(rows.clicks.sum())
    if clicks == 0 or clicks == len(rows):
        raise ValueError(f"the {what} rows need both clicked and unclicked products (clicks: {clicks} of {len(rows)})")


def train_head(rows: CtrRows, settings: TrainSettings = TrainSettings(), progress: bool = True) -> TrainResult:
    """Train on ``rows`` (a time-ordered window): its latest ``validation_fraction`` of
    impressions picks the epoch; the model of the best epoch is returned."""
    from sklearn.metrics import roc_auc_score
    from tqdm.auto import tqdm

    start = time.perf_counter()
    fit, held_out = rows.split_tail(settings.validation_fraction)
    _check_trainable(fit, "training")
    _check_trainable(held_out, "validation")
    torch.manual_seed(settings.seed)
    # Bin edges from the training rows only: the validation slice stays unseen.
    encoder = PiecewiseLinearEncoding.from_data(fit.features, settings.bins) if settings.bins else None
    model = PositionBiasedHead(CtrCvrHead(encoder=encoder), position_tower=settings.position_tower)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    train_tensors, validation_tensors = tensors(fit), tensors(held_out)
    generator = torch.Generator().manual_seed(settings.seed)
    best_loss, best_state, best_epoch, stale = float("inf"), None, 0, 0
    history: list[dict[str, float]] = []
    steps = -(-len(fit) // settings.batch_size)
    bar = tqdm(total=settings.max_epochs, desc="train ctr_head", unit="epoch", disable=not progress, leave=False)
    epoch = 0
    try:
        for epoch in range(1, settings.max_epochs + 1):
            model.train()
            order = torch.randperm(len(fit), generator=generator)
            running = 0.0
            for step in range(steps):
                batch = order[step * settings.batch_size:(step + 1) * settings.batch_size]
                click_loss, purchase_loss = loss_terms(model, *(t[batch] for t in train_tensors))
                loss = click_loss + purchase_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running += loss.item()
            model.eval()
            with torch.no_grad():
                click_loss, purchase_loss = loss_terms(model, *validation_tensors)
            validation_loss = click_loss.item() + purchase_loss.item()
            history.append({"epoch": epoch, "train_loss": running / steps, "validation_loss": validation_loss})
            bar.update(1)
            bar.set_postfix(train=f"{running / steps:.4f}", validation=f"{validation_loss:.4f}")
            if validation_loss < best_loss - 1e-5:
                best_loss, best_state, best_epoch, stale = validation_loss, copy.deepcopy(model.state_dict()), epoch, 0
            else:
                stale += 1
                if stale >= settings.patience:
                    break
    finally:
        bar.close()
    model.load_state_dict(best_state)
    model.eval()

    # The served ctr is P(click | seen, x) times the average examination probability of the
    # training impressions: see ctr_head.ServingHead.
    seen = model.seen_probabilities()
    serving_scale = float(np.mean(seen[position_buckets(fit.positions)]))
    features, buckets, clicks, purchases = validation_tensors
    with torch.no_grad():
        log_click, log_ctcvr = model.log_probabilities(features, buckets.squeeze(1))
        served_ctr, served_ctcvr = ServingHead(model.relevance, serving_scale)(features)
        click_loss, purchase_loss = loss_terms(model, *validation_tensors)
    validation = {
        "click_log_loss_at_shown_position": round(click_loss.item(), 6),
        "purchase_log_loss_at_shown_position": round(purchase_loss.item(), 6),
    }
    if 0 < held_out.clicks.sum() < len(held_out):
        validation["ctr_auc_served"] = round(float(roc_auc_score(held_out.clicks, served_ctr.numpy().ravel())), 6)
        validation["ctr_auc_with_position"] = round(float(roc_auc_score(held_out.clicks, log_click.numpy().ravel())), 6)
    if 0 < held_out.purchases.sum() < len(held_out):
        validation["ctcvr_auc_served"] = round(float(roc_auc_score(held_out.purchases, served_ctcvr.numpy().ravel())), 6)
        validation["ctcvr_auc_with_position"] = round(float(roc_auc_score(held_out.purchases, log_ctcvr.numpy().ravel())), 6)
    return TrainResult(model, serving_scale, best_epoch, epoch, history, validation, time.perf_counter() - start)


HEADS = ("auto", "trees", "mlp")


@dataclass(frozen=True)
class HeadChoice:
    """Which family to train: "mlp" (ESMM + PAL with MLP towers), "trees" (the same model with
    boosted-tree towers, :mod:`training.ctr.ctr_trees`, with `trees` settings or defaults
    derived from the MLP settings) or "auto": both, keeping the one with the lower validation
    loss."""

    head: str = "auto"
    trees: TreeSettings | None = None


@dataclass(frozen=True)
class ExportOptions:
    """How the rows were attributed (recorded in the report), progress bars, and the ONNX
    Runtime check of the installed graph."""

    attribution: timedelta = ctr_data.DEFAULT_ATTRIBUTION
    progress: bool = True
    verify: bool = True


def train_and_export(
    rows: CtrRows,
    repository: Path,
    window: tuple[datetime, datetime],
    settings: TrainSettings = TrainSettings(),
    choice: HeadChoice = HeadChoice(),
    options: ExportOptions = ExportOptions(),
) -> tuple[Path, dict[str, Any]]:
    """Train on ``rows`` and install the next ctr_head version; returns (model.onnx, report).

    "auto" (:class:`HeadChoice`) keeps the family with the lower loss on the validation slice
    (click + purchase log-loss at the shown positions, the loss both families stop early on),
    so the choice never looks at the evaluation window."""
    head, tree_settings = choice.head, choice.trees
    attribution, progress, verify = options.attribution, options.progress, options.verify
    from training.ctr.ctr_trees import train_tree_head

    if head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
    candidates: dict[str, dict[str, Any]] = {}
    trained: dict[str, tuple[Any, float, dict[str, Any]]] = {}
    if head in ("auto", "mlp"):
        result = train_head(rows, settings, progress=progress)
        loss = result.validation["click_log_loss_at_shown_position"] + result.validation["purchase_log_loss_at_shown_position"]
        trained["mlp"] = (result.model, result.serving_scale, result.validation)
        candidates["mlp"] = {"validation_loss": round(loss, 6), "best_epoch": result.best_epoch,
                             "epochs_run": result.epochs_run, "training_seconds": round(result.seconds, 2)}
    if head in ("auto", "trees"):
        tree_settings = tree_settings or TreeSettings(
            position_tower=settings.position_tower, seed=settings.seed, threads=max(1, torch.get_num_threads())
        )
        result = train_tree_head(rows, tree_settings, settings.validation_fraction)
        trained["trees"] = (result.model, result.serving_scale, result.validation)
        candidates["trees"] = {"validation_loss": round(result.validation_loss, 6), "rounds": result.rounds,
                               "training_seconds": round(result.seconds, 2)}
    chosen = min(candidates, key=lambda name: candidates[name]["validation_loss"])
    model, serving_scale, validation = trained[chosen]
    fit, held_out = rows.split_tail(settings.validation_fraction)
    report = {
        "window": {"since": ctr_data.as_utc_text(window[0]), "until": ctr_data.as_utc_text(window[1])},
        "attribution_hours": attribution.total_seconds() / 3600,
        "rows": {"train": fit.summary(), "validation": validation_summary(held_out)},
        "skipped_impressions_without_features": rows.skipped_impressions,
        "validation_metrics": validation,
        "chosen_head": chosen,
        "candidates": candidates,
        "best_epoch": candidates.get("mlp", {}).get("best_epoch"),
        "epochs_run": candidates.get("mlp", {}).get("epochs_run"),
        "training_seconds": round(sum(c["training_seconds"] for c in candidates.values()), 2),
        "settings": asdict(settings),
        "trained_at": ctr_data.as_utc_text(datetime.now(timezone.utc)),
    }
    path = export_trained_head(model, repository, report, verify=verify, serving_scale=serving_scale)
    return path, report


def validation_summary(rows: CtrRows) -> dict[str, Any]:
    summary = rows.summary()
    summary.pop("skipped_impressions_without_features")
    return summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="shelfwise train ctr",
        description="Train the CTR/CVR head (ESMM + position-bias tower) on logged impressions and export it.",
    )
    parser.add_argument("--database-url", default=None, help="PostgreSQL DSN (default: SHELFWISE_DATABASE_URL)")
    parser.add_argument("--since", type=ctr_data.parse_time, default=None, help="first impression time (default: the first)")
    parser.add_argument("--until", type=ctr_data.parse_time, default=None,
                        help="end of the training window, exclusive (default: now); evaluate on a later window")
    parser.add_argument("--out", type=Path, default=None, help="model repository (default: SHELFWISE_MODEL_REPOSITORY)")
    parser.add_argument("--attribution-hours", type=float, default=ctr_data.DEFAULT_ATTRIBUTION.total_seconds() / 3600,
                        help="interactions this long after an impression count as its labels (default: 24)")
    parser.add_argument("--validation-fraction", type=float, default=TrainSettings.validation_fraction)
    parser.add_argument("--max-epochs", type=int, default=TrainSettings.max_epochs)
    parser.add_argument("--no-position-tower", action="store_true", help="ablation: plain ESMM on position-biased labels")
    parser.add_argument("--head", choices=HEADS, default="auto",
                        help="tower family: boosted trees, MLP, or auto (both; the lower validation loss is exported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1)")
    parser.add_argument("--seed", type=int, default=TrainSettings.seed)
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime vs torch check")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from services.common.config import database_url, model_repository

    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    dsn = args.database_url or database_url()
    repository = args.out or model_repository()
    since = args.since or datetime(1970, 1, 1, tzinfo=timezone.utc)
    until = args.until or datetime.now(timezone.utc)
    attribution = timedelta(hours=args.attribution_hours)
    rows = asyncio.run(ctr_data.read_rows(dsn, since, until, attribution, progress=not args.quiet, description="read impressions"))
    print(f"{rows.impressions} impressions ({len(rows)} products shown, {int(rows.clicks.sum())} clicks, "
          f"{int(rows.purchases.sum())} purchases); {rows.skipped_impressions} without features skipped", file=sys.stderr)
    settings = TrainSettings(
        max_epochs=args.max_epochs, validation_fraction=args.validation_fraction,
        position_tower=not args.no_position_tower, seed=args.seed,
    )
    try:
        path, report = train_and_export(
            rows, repository, (since, until), settings, HeadChoice(args.head),
            ExportOptions(attribution, progress=not args.quiet, verify=not args.no_verify),
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    metrics = ", ".join(f"{key} {value}" for key, value in report["validation_metrics"].items())
    tried = ", ".join(f"{name} {c['validation_loss']}" for name, c in report["candidates"].items())
    print(f"exported {path.parent}: {report['chosen_head']} head (validation loss: {tried}; "
          f"{report['training_seconds']} s); validation: {metrics}")
    print("restart ranking to serve it; `shelfwise eval ctr` compares it on a later window")
    return 0


if __name__ == "__main__":
    sys.exit(main())

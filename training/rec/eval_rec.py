"""`shelfwise eval rec`: next-item recommendation on the Amazon benchmark, our sequential model
side by side with RecBole's SASRec and a popularity baseline, in one run per dataset.

Protocol (leave-one-out with full ranking, as the published full-ranking figures, see the
shared data README; what those figures do with the history is below):

- leave-one-out per user (``training.rec.sequential_data``): the last item is the test target, the
  second-last the validation target, the rest trains; the history of the test target is
  everything before it (the validation item included);
- the target is ranked against ALL items (no sampled negatives);
- items already in the user's history are excluded from the ranking (our headline rule); a
  target that is itself in the history therefore counts as a miss (no such user in the three
  benchmark files). RecBole's evaluator does NOT exclude them for sequential models, nor, as far
  as its paper says, does TIGER's: compare those with our history-kept row;
- ties are counted pessimistically: rank = number of other candidate items whose score is >=
  the target's (matters for popularity, whose scores are counts; never for a learned model);
- Recall@10/20 and NDCG@10/20 (one relevant item: 1/log2(rank + 2) inside the cut-off)
  averaged over all users; a 95% percentile-bootstrap interval over users for NDCG@10 of ours
  and of popularity.

Rows:

- ours: ``build/rec/<dataset>/model.pt`` from ``shelfwise train rec --dataset <dataset>``;
  model selection used the validation item only, the test item is scored here, once;
- ours again under RecBole's rule (history items NOT excluded), the like-for-like comparison;
- RecBole SASRec: ``training.rec.recbole_baseline.run_sasrec`` (trains or reuses its cache under
  ``build/recbole/<file stem>/``, the same split, RecBole's own full-ranking evaluator, which
  does not exclude history items for sequential models); ``--skip-recbole`` leaves it out,
  ``--recbole-cached-only`` never trains it, ``--recbole-checkpoint`` scores the best checkpoint
  of a run trained in pieces (``python -m training.rec.recbole_baseline NAME --resume``) without
  training;
- popularity: training-split item counts (each user's last two items left out), same exclusion
  and tie rules;
- published Beauty figures (Recall@10 / NDCG@10), printed for reference and labelled as not
  re-run: the TIGER paper's table (Rajput et al., NeurIPS 2023), which reports SASRec, BERT4Rec
  and S3-Rec under full ranking next to TIGER. (The S3-Rec paper itself evaluates against 99
  sampled negatives, whose figures are not comparable.)

Output: a table per dataset on stdout and ``build/reports/rec-<dataset>.json``.

Usage::

    shelfwise eval rec                                  # beauty, sports and toys
    shelfwise eval rec --dataset beauty [--skip-recbole]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from training.rec.rec_metrics import CHUNK_USERS, METRICS, per_user_metrics, summarize, target_ranks
from training.rec.sequential_data import (
    DATASETS,
    EvalSet,
    dataset_key,
    eval_split,
    item_counts,
    load_amazon,
    right_aligned,
    training_sequences,
)
from training.stats import mean_interval

if TYPE_CHECKING:
    from training.rec.sequential_model import SequentialRecommender

BOOTSTRAP_SAMPLES = 1000
BOOTSTRAP_SEED = 7
PROTOCOL = ("leave-one-out, full ranking over all items, items in the user's history excluded, "
            "ties counted pessimistically")
# Beauty, full ranking, as published (Recall@10, NDCG@10): all four from the TIGER paper's table
# (Rajput et al. 2023; the S3-Rec paper's own table uses 99 sampled negatives). Not re-run here.
PUBLISHED_BEAUTY = {
    "SASRec": (0.0605, 0.0318),
    "BERT4Rec": (0.0347, 0.0170),
    "S3-Rec": (0.0647, 0.0327),
    "TIGER": (0.0648, 0.0384),
}




def evaluate_model(model: "SequentialRecommender", split: EvalSet, num_items: int, max_length: int | None = None,
                   chunk_users: int = CHUNK_USERS, exclude_history: bool = True) -> dict:
    """Full-ranking metrics of the model's scores on one split (histories truncated to the
    model's window)."""
    import torch

    max_length = max_length or model.config.max_length
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            table, scoring = model.item_tables()
            if table.shape[0] != num_items + 1:
                raise ValueError(f"the model knows {table.shape[0] - 1} items, the data has {num_items}")

            def scores(index: np.ndarray) -> torch.Tensor:
                histories = [split.histories[i] for i in index]
                width = min(max_length, max(1, max(len(h) for h in histories)))
                ids = torch.from_numpy(right_aligned(histories, max_length, width))
                return model.encode_ids(ids, table) @ scoring.T

            ranks = target_ranks(scores, split, chunk_users, exclude_history)
    finally:
        model.train(was_training)
    return {"metrics": summarize(ranks), "ranks": ranks}


def evaluate_popularity(counts: np.ndarray, split: EvalSet, chunk_users: int = CHUNK_USERS) -> dict:
    import torch

    table = torch.from_numpy(counts.astype(np.float32))
    ranks = target_ranks(lambda index: table.expand(len(index), -1), split, chunk_users)
    return {"metrics": summarize(ranks), "ranks": ranks}


# ------------------------------------------------------------------------------ command


@dataclass(frozen=True)
class RecboleRun:
    """How the RecBole baseline is obtained: its epoch cap (None: the benchmark's), CPU threads,
    `fresh` (retrain even if cached), `cached_only` and `checkpoint` (see :func:`run_recbole`)."""

    epochs: int | None = None
    threads: int = 1
    fresh: bool = False
    cached_only: bool = False
    checkpoint: bool = False


def run_recbole(name: str, sequences: list[list[int]], work_dir: Path, run: RecboleRun) -> dict:
    """RecBole SASRec through the baseline module, or a dict with `unavailable` saying why.
    `cached_only`: return the baseline's cached result for exactly these data and settings,
    never train (a full RecBole run takes hours on a CPU). `checkpoint`: never train either,
    score the best checkpoint in `work_dir` (``recbole_baseline.rescore``), e.g. of a long run
    trained in pieces (``--resume``) that early stopping has not ended yet."""
    try:
        from training.rec import recbole_baseline
    except Exception as error:  # the module, RecBole or one of its dependencies is missing
        return {"unavailable": f"training.rec.recbole_baseline not importable: {type(error).__name__}: {error}"}
    epochs, threads, fresh, cached_only, checkpoint = run.epochs, run.threads, run.fresh, run.cached_only, run.checkpoint
    if checkpoint:
        try:
            return {**recbole_baseline.rescore(name, sequences, work_dir, threads=threads), "checkpoint": True}
        except FileNotFoundError as error:
            return {"unavailable": f"{error}; train one with `python -m training.rec.recbole_baseline {name}`"}
        except Exception as error:
            return {"unavailable": f"rescoring the checkpoint failed: {type(error).__name__}: {error}"}
    if epochs is None:
        # The benchmark's cap (RecBole's own 300 epochs take a day per data set on a CPU).
        epochs = getattr(recbole_baseline, "BENCHMARK_EPOCHS", None)
    if cached_only:
        try:
            import importlib.metadata

            key = recbole_baseline.cache_key(sequences, recbole_baseline.sasrec_settings(epochs=epochs, seed=2020),
                                             importlib.metadata.version("recbole"))
            path = Path(work_dir) / recbole_baseline.RESULT_FILE
            cached = json.loads(path.read_text()) if path.exists() else {}
        except Exception as error:
            return {"unavailable": f"cannot read the RecBole cache: {type(error).__name__}: {error}"}
        if key not in cached:
            return {"unavailable": f"no cached result in {path} for these settings; run "
                                   f"`python -m training.rec.recbole_baseline {name}` or drop --recbole-cached-only"}
        return {**cached[key], "cached": True}
    try:
        return recbole_baseline.run_sasrec(name, sequences, work_dir, epochs=epochs, seed=2020,
                                           run=recbole_baseline.SasrecRun(threads=threads, fresh=fresh))
    except Exception as error:
        return {"unavailable": f"run_sasrec failed: {type(error).__name__}: {error}"}


def _fmt(value) -> str:
    return "     -" if value is None else f"{value:.4f}"


def print_table(report: dict, file=None) -> None:
    file = sys.stdout if file is None else file
    rows = report["rows"]
    print(f"\n{report['dataset']} — {report['split']} item, {report['users']:,} users, {report['items']:,} items",
          file=file)
    print(f"  protocol: {report['protocol']}", file=file)
    header = (f"  {'model':<44} {'history':<8} {'Recall@10':>9} {'NDCG@10':>8} {'Recall@20':>9} {'NDCG@20':>8}"
              f"  NDCG@10 95% CI")
    print(header, file=file)
    print("  " + "-" * (len(header) - 2), file=file)
    for row in rows:
        if row.get("unavailable"):
            print(f"  {row['label']:<44} not available ({row['unavailable']})", file=file)
            continue
        m = row["metrics"]
        ci = row.get("ndcg@10_ci")
        ci_text = f"[{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""
        history = "excluded" if row.get("history_excluded") else "kept"
        print(f"  {row['label']:<44} {history:<8} {m['recall@10']:>9.4f} {m['ndcg@10']:>8.4f} {m['recall@20']:>9.4f} "
              f"{m['ndcg@20']:>8.4f}  {ci_text}", file=file)
    if report.get("published"):
        print("  published, not re-run (Beauty, full ranking, TIGER paper's table; compare with history kept):",
              file=file)
        for name, (recall, ndcg) in report["published"].items():
            print(f"  {'  ' + name:<44} {'':<8} {recall:>9.4f} {ndcg:>8.4f} {'-':>9} {'-':>8}", file=file)
    for note in report.get("notes", []):
        print(f"  note: {note}", file=file)


def evaluate_dataset(key: str, args) -> tuple[int, dict | None]:
    import torch

    from training.rec.sequential_model import load_model

    model_dir = args.models_dir / key
    model_path = model_dir / "model.pt"
    if not model_path.exists():
        print(f"error: {model_path} not found: run `shelfwise train rec --dataset {key}` first", file=sys.stderr)
        return 2, None
    data = load_amazon(key, args.data_dir, with_attributes=True)
    split = eval_split(data.sequences, args.split)
    started = time.monotonic()
    rows = []

    model = load_model(model_path)
    ours = evaluate_model(model, split, data.num_items)
    ours_kept = evaluate_model(model, split, data.num_items, exclude_history=False)
    training = {}
    report_path = model_dir / "training_report.json"
    if report_path.exists():
        training = json.loads(report_path.read_text(encoding="utf-8"))
    rows.append({
        "label": "Shelfwise sequential (ours)", "history_excluded": True, "metrics": ours["metrics"],
        "ndcg@10_ci": mean_interval(per_user_metrics(ours["ranks"])["ndcg@10"], args.bootstrap, BOOTSTRAP_SEED)[1:],
        "model": str(model_path), "config": model.config.to_json(),
        "training": {k: training.get(k) for k in ("training_seconds", "epochs_run", "best_epoch", "best_valid",
                                                  "settings", "machine", "command")},
    })
    # RecBole's evaluator does not exclude the history for sequential models: ours under the
    # same rule is the like-for-like comparison.
    rows.append({
        "label": "Shelfwise sequential (ours), RecBole's rule", "history_excluded": False,
        "metrics": ours_kept["metrics"],
        "ndcg@10_ci": mean_interval(per_user_metrics(ours_kept["ranks"])["ndcg@10"], args.bootstrap, BOOTSTRAP_SEED)[1:],
    })

    recbole_label = "RecBole SASRec (re-run, RecBole's evaluator)"
    if args.skip_recbole:
        recbole_row = {"label": recbole_label, "unavailable": "skipped with --skip-recbole"}
    else:
        print(f"{data.name}: RecBole SASRec ...", file=sys.stderr, flush=True)
        recbole = run_recbole(data.name, data.sequences, args.recbole_dir / data.name, RecboleRun(
            args.recbole_epochs, args.threads, args.recbole_fresh, args.recbole_cached_only, args.recbole_checkpoint))
        if "unavailable" in recbole:
            recbole_row = {"label": recbole_label, "unavailable": recbole["unavailable"]}
        else:
            cap = (recbole.get("config") or {}).get("epochs")
            if recbole.get("checkpoint"):
                label = f"RecBole SASRec (checkpoint, epoch {recbole['checkpoint_epoch']})"
            else:
                label = f"RecBole SASRec ({cap}-epoch cap, its evaluator)" if cap else recbole_label
            recbole_row = {
                "label": label,
                "history_excluded": False,
                "metrics": {name: float(recbole[name]) for name in METRICS},
                **{k: recbole.get(k) for k in ("train_seconds", "epochs_run", "best_epoch", "stopped_early", "users",
                                               "cached", "config", "recbole_version", "checkpoint",
                                               "checkpoint_epoch", "best_valid_ndcg@10", "checkpoint_epoch_cap")},
            }
    rows.append(recbole_row)
    if "metrics" in recbole_row and recbole.get("history_excluded"):
        # The same trained SASRec ranked by our evaluator under our rule: like for like with our
        # first row (results cached before this column existed do not have it).
        rows.append({"label": "RecBole SASRec, same model, our evaluator", "history_excluded": True,
                     "metrics": {name: float(recbole["history_excluded"][name]) for name in METRICS}})

    counts = item_counts(training_sequences(data.sequences, validate=True), data.num_items)
    popularity = evaluate_popularity(counts, split)
    rows.append({"label": "Popularity (training-split counts)", "history_excluded": True,
                 "metrics": popularity["metrics"],
                 "ndcg@10_ci": mean_interval(per_user_metrics(popularity["ranks"])["ndcg@10"], args.bootstrap, BOOTSTRAP_SEED)[1:]})

    notes = []
    if "metrics" in recbole_row:
        diff = ours_kept["metrics"]["ndcg@10"] - recbole_row["metrics"]["ndcg@10"]
        notes.append(f"ours - RecBole SASRec NDCG@10 under the same rule (history kept) = {diff:+.4f}")
        if recbole.get("history_excluded"):
            diff = ours["metrics"]["ndcg@10"] - recbole["history_excluded"]["ndcg@10"]
            notes.append(f"ours - RecBole SASRec NDCG@10 under the same rule (history excluded) = {diff:+.4f}")
        if recbole_row.get("checkpoint"):
            notes.append(f"RecBole SASRec: the best checkpoint in {args.recbole_dir / data.name} (epoch "
                         f"{recbole_row['checkpoint_epoch']}, validation NDCG@10 {recbole_row['best_valid_ndcg@10']:.4f} "
                         f"under its rule, epoch cap {recbole_row['checkpoint_epoch_cap']}); see its recbole.log "
                         "for whether early stopping has ended that run")
        else:
            notes.append(f"RecBole SASRec: {recbole_row.get('epochs_run')} epochs (cap "
                         f"{(recbole_row.get('config') or {}).get('epochs')}; not converged at a small cap), "
                         f"{recbole_row.get('train_seconds')}s training"
                         f"{' (cached result)' if recbole_row.get('cached') else ''}")
    if training:
        best = training.get("best_valid") or {}
        notes.append(f"ours: validation NDCG@10 {best.get('ndcg@10', float('nan')):.4f} (the item used for early "
                     f"stopping); trained {training.get('training_seconds')}s, {training.get('epochs_run')} epochs "
                     f"(best {training.get('best_epoch')}), "
                     f"{(training.get('machine') or {}).get('torch_threads')} torch thread(s)")
    in_history = sum(1 for h, t in zip(split.histories, split.targets) if t in set(h))
    notes.append(f"targets already in the user's history (a miss when excluded): {in_history}")
    report = {
        "dataset": data.name, "split": args.split, "users": len(split.targets), "items": data.num_items,
        "protocol": PROTOCOL, "metrics": list(METRICS), "bootstrap_samples": args.bootstrap,
        "rows": rows, "published": PUBLISHED_BEAUTY if data.name == "Beauty" else None,
        "published_note": "published full-ranking figures, not re-run" if data.name == "Beauty" else None,
        "notes": notes, "seconds": round(time.monotonic() - started, 1),
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()},
    }
    return 0, report


def build_parser() -> argparse.ArgumentParser:
    from services.common.config import shared_data_dir

    parser = argparse.ArgumentParser(
        prog="shelfwise eval rec", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", action="append", help="beauty, sports, toys or a file stem (repeatable; "
                                                           "default: all three)")
    parser.add_argument("--data-dir", type=Path, default=shared_data_dir(), help="shared data folder")
    parser.add_argument("--models-dir", type=Path, default=Path("build") / "rec",
                        help="where `shelfwise train rec` saved the models (default: %(default)s)")
    parser.add_argument("--split", choices=["test", "valid"], default="test",
                        help="the held-out item to score (default: %(default)s)")
    parser.add_argument("--skip-recbole", action="store_true", help="leave the RecBole SASRec row out")
    parser.add_argument("--recbole-epochs", type=int,
                        help="RecBole epoch cap (default: training.rec.recbole_baseline.BENCHMARK_EPOCHS)")
    parser.add_argument("--recbole-fresh", action="store_true", help="retrain RecBole instead of using its cache")
    parser.add_argument("--recbole-cached-only", action="store_true",
                        help="use RecBole's cached result only, never train it (hours on a CPU)")
    parser.add_argument("--recbole-checkpoint", action="store_true",
                        help="score RecBole's best checkpoint in --recbole-dir, never train (for a run trained "
                             "in pieces with `python -m training.rec.recbole_baseline NAME --resume`)")
    parser.add_argument("--recbole-dir", type=Path, default=Path("build") / "recbole",
                        help="RecBole work folders, one per file stem (default: %(default)s, as "
                             "`python -m training.rec.recbole_baseline`)")
    parser.add_argument("--bootstrap", type=int, default=BOOTSTRAP_SAMPLES, help="bootstrap resamples")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--reports-dir", type=Path, default=Path("build") / "reports")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    import torch

    args = build_parser().parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    try:
        keys = [dataset_key(name) for name in (args.dataset or list(DATASETS))]
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    status = 0
    for key in keys:
        try:
            code, report = evaluate_dataset(key, args)
        except (ValueError, FileNotFoundError) as error:
            print(f"error: {error}", file=sys.stderr)
            code, report = 2, None
        status = max(status, code)
        if report is None:
            continue
        print_table(report)
        args.reports_dir.mkdir(parents=True, exist_ok=True)
        path = args.reports_dir / f"rec-{key}{'' if args.split == 'test' else '-' + args.split}.json"
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"  report: {path}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())

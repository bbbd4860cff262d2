"""RecBole's SASRec as the reference baseline of the sequential-recommendation benchmark.

`run_sasrec` trains and evaluates RecBole's own SASRec, with RecBole's own default settings, on
exactly the leave-one-out split that `shelfwise eval rec` uses for our models, so the report can
put a published, well-kept implementation next to ours. The result is cached as JSON under the
work directory, keyed by the data, the settings and the RecBole version, because a full run
takes hours on CPU.

RecBole 1.2.1 assumes it owns the process; `_recbole_process` confines what it touches:
- it reads `--key=value` arguments from `sys.argv` and lets them override the settings given in
  code, so `sys.argv` is emptied while the settings are read;
- it sets `CUDA_VISIBLE_DEVICES` from `gpu_id` (empty here, for the CPU), which is restored;
- it logs through the root logger, and writes `log/`, `log_tensorboard/` and `saved/` relative to
  the working directory: the run happens inside `work_dir`, with the root logger writing only to
  `work_dir/recbole.log`, and `checkpoint_dir` is set there too;
- importing its sequential models runs `sine.py`, which switches autograd's anomaly detection
  on for the whole process (`torch.autograd.set_detect_anomaly(True)` at import time); every
  backward pass then checks each gradient for NaNs, which made SASRec's epochs about 1.3x
  slower here and would slow any later training in the caller's process. It is kept off while
  RecBole runs and the caller's setting is restored afterwards;
- torch >= 2.6 loads checkpoints with `weights_only=True`, and RecBole's checkpoint holds its
  `Config` object, so `Trainer.evaluate(load_best_model=True)` fails. We load the best checkpoint
  ourselves, the file this same call has just written, with `weights_only=False`, and then
  evaluate with `load_best_model=False`; nothing in torch or RecBole is patched.
(Its `Config` also re-creates numpy's removed aliases such as `np.float`; that is harmless.)

Run it for the benchmark's data sets (capped at BENCHMARK_EPOCHS, results in
build/recbole/<name>/) with
`python -m training.rec.recbole_baseline Beauty Sports_and_Outdoors Toys_and_Games`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

# RecBole 1.2.1's defaults for SASRec (its properties/overall.yaml and model/SASRec.yaml), written
# out so that the cache key and the report show them; the evaluation settings are our protocol.
SASREC_SETTINGS: dict[str, Any] = {
    "loss_type": "CE",
    # CE scores every item, so RecBole requires no sampled negatives for it.
    "train_neg_sample_args": None,
    "n_layers": 2,
    "n_heads": 2,
    "hidden_size": 64,
    "inner_size": 256,
    "hidden_dropout_prob": 0.5,
    "attn_dropout_prob": 0.5,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-12,
    "initializer_range": 0.02,
    "MAX_ITEM_LIST_LENGTH": 50,
    "learner": "adam",
    "learning_rate": 0.001,
    "weight_decay": 0.0,
    "train_batch_size": 2048,
    "eval_batch_size": 4096,
    "stopping_step": 10,
    "eval_step": 1,
    "reproducibility": True,
    # Leave-one-out by time order per user: last item test, second-last validation.
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "topk": [10, 20],
    "metrics": ["Recall", "NDCG"],
    "valid_metric": "NDCG@10",
    # Our sequences are already the split's input: no k-core filtering, no de-duplication.
    "user_inter_num_interval": "[0,inf)",
    "item_inter_num_interval": "[0,inf)",
    "rm_dup_inter": None,
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
}
RECBOLE_DEFAULT_EPOCHS = 300
# The cap of the benchmark's runs. With one torch thread on our shared 2-core machines an epoch
# (training and validation) took 3.7-5 min on Beauty, 3 on Toys_and_Games and 5.4 on
# Sports_and_Outdoors, so RecBole's 300 epochs could take a day or more per data set (early
# stopping ends it sooner only once validation stops improving). 5 epochs each fit the ~90 min
# budget (64 min measured for all three, 85 min extrapolated from the busier first epoch); every data set gets the same number of passes over its training
# samples, and early stopping and testing the best validation epoch are unchanged. SASRec is far
# from converged after 5 epochs: compare it with our models trained on the same budget, never
# with published (converged) figures.
BENCHMARK_EPOCHS = 5
# A user needs 4 items for RecBole to put one sample each in training, validation and test
# (it splits the per-prefix samples, of which a user of n items has n-1); with 3 items it would
# train on our validation target instead.
MIN_SEQUENCE_LENGTH = 4
RESULT_FILE = "result.json"
BEST_CHECKPOINT = "SASRec-best.pth"


@dataclass(frozen=True)
class SasrecRun:
    """How a run goes: CPU threads, `fresh` (ignore a cached result), `resume` (go on from the
    last checkpoint of an interrupted run)."""

    threads: int = 1
    fresh: bool = False
    resume: bool = False


def run_sasrec(
    name: str,
    sequences: list[list[int]],
    work_dir: Path,
    *,
    epochs: int | None = None,
    seed: int = 2020,
    run: SasrecRun = SasrecRun(),
) -> dict:
    """Trains and evaluates RecBole's SASRec on exactly our leave-one-out split of `sequences`
    (one list per user, item ids 1..N in time order): last item = test, second-last = validation,
    rest = training; full ranking against all items; returns
    {"recall@10","recall@20","ndcg@10","ndcg@20","train_seconds","epochs_run","cached","config","recbole_version"}
    and also "best_epoch" (0-based), "stopped_early" (False when the epoch cap ended training)
    and "users" (users evaluated on the test item).

    Ranking: RecBole scores every item for each test user and masks only its padding id. For
    sequential models it does NOT exclude the user's history items (its `FullSortEvalDataLoader`
    passes no history for them, unlike for general recommenders), so an item the user already
    had competes with the target. Item ids are remapped by RecBole (tokens are our ids); an item
    id that occurs in no sequence is not a candidate.

    `epochs` caps training (None: RecBole's default of 300; the benchmark uses
    BENCHMARK_EPOCHS); either way training stops early after 11 validations in a row without a
    better NDCG@10 (RecBole's stopping_step 10), and the best validation epoch is tested.
    Training happens in `work_dir` (atomic file, checkpoint, `recbole.log`, tensorboard events)
    and the result is cached in `work_dir/result.json`; a later call with the same data and
    settings returns it with "cached": True unless `fresh`. `threads` is not part of the cache
    key: it changes only the order of floating-point sums.
    """
    threads, fresh, resume = run.threads, run.fresh, run.resume
    work_dir = Path(work_dir).resolve()
    short = [i for i, seq in enumerate(sequences) if len(seq) < MIN_SEQUENCE_LENGTH]
    if short:
        raise ValueError(
            f"{len(short)} sequences (the first at index {short[0]}) have fewer than {MIN_SEQUENCE_LENGTH} "
            "items; RecBole's leave-one-out would then differ from ours"
        )
    version = importlib.metadata.version("recbole")
    settings = sasrec_settings(epochs=epochs, seed=seed)
    key = cache_key(sequences, settings, version)
    results_path = work_dir / RESULT_FILE
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    if key in results and not fresh and not resume:
        return {**results[key], "cached": True}

    result = _train_and_test(name, sequences, work_dir, settings, threads, resume=resume)
    result.update(config={**settings, "threads": threads}, recbole_version=version)
    work_dir.mkdir(parents=True, exist_ok=True)
    results[key] = result
    results_path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return {**result, "cached": False}


def sasrec_settings(*, epochs: int | None, seed: int) -> dict[str, Any]:
    """The settings given to RecBole: its SASRec defaults, our split, the epoch cap and seed."""
    return {**SASREC_SETTINGS, "epochs": RECBOLE_DEFAULT_EPOCHS if epochs is None else epochs, "seed": seed}


def cache_key(sequences: list[list[int]], settings: dict[str, Any], recbole_version: str) -> str:
    payload = json.dumps([sequences, settings, recbole_version], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def write_atomic_file(name: str, sequences: list[list[int]], data_dir: Path) -> Path:
    """`data_dir/<name>/<name>.inter`: one row per interaction, the position in the user's
    sequence as timestamp (RecBole orders by it), user ids 1.. by list order."""
    path = data_dir / name / f"{name}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        for user, seq in enumerate(sequences, start=1):
            for position, item in enumerate(seq):
                out.write(f"{user}\t{item}\t{position}\n")
    return path


def prepare(name: str, sequences: list[list[int]], work_dir: Path, settings: dict[str, Any]):
    """RecBole's config, dataset and train/valid/test loaders for `sequences`; call it inside
    `_recbole_process(work_dir, ...)`."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    data_dir = work_dir / "data"
    write_atomic_file(name, sequences, data_dir)
    config = Config(
        model="SASRec",
        dataset=name,
        config_dict={
            **settings,
            "data_path": str(data_dir),
            "checkpoint_dir": str(work_dir / "saved"),
            "gpu_id": "",
            "use_gpu": False,
            "worker": 0,
            "show_progress": False,
            # Off: RecBole reloads such pickles from checkpoint_dir without checking the data.
            "save_dataset": False,
            "save_dataloaders": False,
        },
    )
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    return config, dataset, train_data, valid_data, test_data


@contextlib.contextmanager
def _recbole_process(work_dir: Path, threads: int) -> Iterator[None]:
    """Runs RecBole inside `work_dir` with `threads` torch threads, no command-line arguments for
    it to read, and its root-logger output going only to `work_dir/recbole.log`; restores the
    caller's cwd, sys.argv, threads, logging, CUDA_VISIBLE_DEVICES and anomaly detection."""
    from recbole.utils.logger import RemoveColorFilter

    anomaly = torch.is_anomaly_enabled(), torch.is_anomaly_check_nan_enabled()
    import recbole.model.sequential_recommender  # noqa: F401  (the import that switches it on)

    torch.autograd.set_detect_anomaly(False)

    work_dir.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    saved_threads = torch.get_num_threads()
    saved_cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
    saved_argv = sys.argv
    handler = logging.FileHandler(work_dir / "recbole.log")
    handler.addFilter(RemoveColorFilter())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)
    torch.set_num_threads(threads)
    sys.argv = saved_argv[:1]
    try:
        with contextlib.chdir(work_dir), warnings.catch_warnings():
            # pandas 2.x warns that RecBole's chained fillna(inplace=True) stops working in pandas
            # 3; it only fills missing values, and our atomic files have none.
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\.")
            yield
    finally:
        handler.close()
        torch.set_anomaly_enabled(*anomaly)
        sys.argv = saved_argv
        root.handlers = saved_handlers
        root.setLevel(saved_level)
        torch.set_num_threads(saved_threads)
        if saved_cuda is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = saved_cuda


def _train_and_test(
    name: str, sequences: list[list[int]], work_dir: Path, settings: dict[str, Any], threads: int,
    resume: bool = False,
) -> dict[str, Any]:
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    with _recbole_process(work_dir, threads):
        config, dataset, train_data, valid_data, test_data = prepare(name, sequences, work_dir, settings)
        logging.getLogger().info(config)
        init_seed(config["seed"], config["reproducibility"])
        model = SASRec(config, train_data._dataset).to(config["device"])
        trainer = Trainer(config, model)
        # A fixed name, so that reruns replace the checkpoint instead of piling up timestamped ones.
        trainer.saved_model_file = str(work_dir / "saved" / BEST_CHECKPOINT)
        resumed_from = _resume(trainer, model, config) if resume else None
        started = time.perf_counter()
        trainer.fit(train_data, valid_data, saved=True, show_progress=False)
        train_seconds = time.perf_counter() - started
        checkpoint = _load_checkpoint(trainer.saved_model_file, model, config)
        test = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        logging.getLogger().info(f"test result: {dict(test)}")
        trainer.tensorboard.close()
        ours = score_with_our_evaluator(model, dataset, sequences, config)
    # Epoch indices of this call's training (a resumed run starts after the checkpoint's).
    last_epoch = max(trainer.train_loss_dict, default=(resumed_from if resumed_from is not None else -1))
    return {
        **{metric: float(test[metric]) for metric in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")},
        **ours,
        "train_seconds": round(train_seconds, 1),
        "epochs_run": last_epoch + 1,
        "best_epoch": int(checkpoint["epoch"]),
        "stopped_early": trainer.cur_step > trainer.stopping_step,
        "users": len(test_data._dataset),
        "resumed_from_epoch": resumed_from,
    }


def _load_checkpoint(path: str, model, config) -> dict[str, Any]:
    """Loads the best checkpoint into `model`. torch >= 2.6 refuses RecBole's pickled Config with
    weights_only=True; the file is our own (written by this module), so unpickling it is safe."""
    checkpoint = torch.load(path, map_location=config["device"], weights_only=False)
    model.load_state_dict(checkpoint["state_dict"])
    model.load_other_parameter(checkpoint.get("other_parameter"))
    return checkpoint


def _resume(trainer, model, config) -> int:
    """RecBole's `Trainer.resume_checkpoint`, with the checkpoint loaded as `_load_checkpoint`
    does; returns the epoch the checkpoint was saved at."""
    path = Path(trainer.saved_model_file)
    if not path.is_file():
        raise FileNotFoundError(f"nothing to resume: {path} does not exist (run without --resume first)")
    checkpoint = _load_checkpoint(str(path), model, config)
    saved_config = checkpoint["config"]
    for setting in ("model", "dataset", "hidden_size", "n_layers", "MAX_ITEM_LIST_LENGTH", "learning_rate"):
        if saved_config[setting] != config[setting]:
            raise ValueError(f"{path} was trained with {setting}={saved_config[setting]!r}, not {config[setting]!r}")
    trainer.start_epoch = checkpoint["epoch"] + 1
    trainer.cur_step = checkpoint["cur_step"]
    trainer.best_valid_score = checkpoint["best_valid_score"]
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    logging.getLogger().info(f"resumed from {path} at epoch {trainer.start_epoch}")
    return int(checkpoint["epoch"])


def score_with_our_evaluator(model, dataset, sequences: list[list[int]], config) -> dict[str, Any]:
    """Test metrics of a trained RecBole sequential model from `training.rec.eval_rec`'s own ranking
    code, under both rules: "history_excluded" (the user's history items removed from the
    ranking, as our models are reported) and "history_kept_our_evaluator" (RecBole's rule).

    The model scores RecBole's internal item ids; they are mapped back to our ids (tokens), and
    items RecBole never saw score -inf (they are not candidates in its evaluator either). Each
    user's input is the last MAX_ITEM_LIST_LENGTH items before the test item, oldest first and
    padded at the end, the way RecBole builds its own test samples."""
    import numpy as np
    from recbole.data.interaction import Interaction

    from training.rec.rec_metrics import summarize, target_ranks
    from training.rec.sequential_data import eval_split

    split = eval_split(sequences, "test")
    num_items = max(max(seq) for seq in sequences)
    tokens = dataset.field2id_token[config["ITEM_ID_FIELD"]]
    ours_of_internal = np.asarray([int(token) for token in tokens[1:]], dtype=np.int64)  # internal id i+1
    internal_of_ours = np.zeros(num_items + 1, dtype=np.int64)
    internal_of_ours[ours_of_internal] = np.arange(1, len(tokens), dtype=np.int64)
    columns = torch.from_numpy(ours_of_internal)
    width = config["MAX_ITEM_LIST_LENGTH"]

    def scores(index: np.ndarray) -> torch.Tensor:
        ids = np.zeros((len(index), width), dtype=np.int64)
        lengths = np.zeros(len(index), dtype=np.int64)
        for row, user in enumerate(index):
            history = internal_of_ours[np.asarray(split.histories[user][-width:], dtype=np.int64)]
            ids[row, :len(history)] = history
            lengths[row] = len(history)
        batch = Interaction({model.ITEM_SEQ: torch.from_numpy(ids), model.ITEM_SEQ_LEN: torch.from_numpy(lengths)})
        internal = model.full_sort_predict(batch.to(config["device"])).view(len(index), -1).cpu()
        out = torch.full((len(index), num_items + 1), float("-inf"))
        out[:, columns] = internal[:, 1:]
        return out

    model.eval()
    with torch.no_grad():
        excluded = target_ranks(scores, split, exclude_history=True)
        kept = target_ranks(scores, split, exclude_history=False)
    return {"history_excluded": summarize(excluded), "history_kept_our_evaluator": summarize(kept)}


def rescore(name: str, sequences: list[list[int]], work_dir: Path, *, seed: int = 2020, threads: int = 1) -> dict:
    """Test metrics (RecBole's evaluator and ours, both rules) of the best checkpoint already in
    `work_dir/saved/`, without training: e.g. for a run that was stopped before it finished."""
    from recbole.model.sequential_recommender import SASRec
    from recbole.trainer import Trainer

    work_dir = Path(work_dir).resolve()
    path = work_dir / "saved" / BEST_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with _recbole_process(work_dir, threads):
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        config, dataset, train_data, _, test_data = prepare(name, sequences, work_dir, sasrec_settings(epochs=None, seed=seed))
        model = SASRec(config, train_data._dataset).to(config["device"])
        _load_checkpoint(str(path), model, config)
        test = Trainer(config, model).evaluate(test_data, load_best_model=False, show_progress=False)
        ours = score_with_our_evaluator(model, dataset, sequences, config)
    return {
        **{metric: float(test[metric]) for metric in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")},
        **ours,
        "checkpoint_epoch": int(checkpoint["epoch"]),
        "best_valid_ndcg@10": float(checkpoint["best_valid_score"]),
        "checkpoint_epoch_cap": checkpoint["config"]["epochs"],
    }


def main(argv: list[str] | None = None) -> None:
    # The reader of `shelfwise eval rec`: the same sequences give the same cache key.
    from training.rec.sequential_data import amazon_seq_dir, read_sequences

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", help="amazon_seq names, e.g. Beauty")
    parser.add_argument(
        "--epochs", type=int, default=BENCHMARK_EPOCHS,
        help=f"epoch cap (default {BENCHMARK_EPOCHS}, the benchmark's; {RECBOLE_DEFAULT_EPOCHS} is RecBole's default)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--fresh", action="store_true", help="retrain even if a cached result exists")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the best checkpoint in the build dir (up to --epochs) instead of starting over")
    parser.add_argument("--rescore", action="store_true",
                        help="no training: test the best checkpoint in the build dir under both history rules")
    parser.add_argument("--build-dir", type=Path, default=Path("build/recbole"))
    args = parser.parse_args(argv)
    for name in args.datasets:
        sequences = read_sequences(amazon_seq_dir() / f"{name}.txt")
        if args.rescore:
            print(name, json.dumps(rescore(name, sequences, args.build_dir / name, seed=args.seed, threads=args.threads)),
                  flush=True)
            continue
        result = run_sasrec(
            name, sequences, args.build_dir / name,
            epochs=args.epochs, seed=args.seed, run=SasrecRun(args.threads, args.fresh, args.resume),
        )
        print(name, json.dumps({k: v for k, v in result.items() if k != "config"}), flush=True)


if __name__ == "__main__":
    main()

"""`shelfwise train rec`: train the sequential recommender (``training.rec.sequential_model``) on
purchase sequences, with early stopping on the validation item.

Data: one of the Amazon benchmark files (``--dataset beauty|sports|toys`` or the file stem,
read from ``amazon_seq/`` in the shared data folder) with its brand/category attributes.
Leave-one-out (``training.rec.sequential_data``): the model learns from each user's sequence
without its last two items; the second-last item (validation) decides early stopping and
every choice made on this command's settings; the last item (test) is never read here — it is
scored once, by ``shelfwise eval rec``, per final model.

Training, the recipe that makes SASRec strong on these files:

- softmax cross-entropy of the next item against the catalogue (the original SASRec samples
  one negative with a binary loss; scoring against the whole catalogue is both the evaluation
  protocol and a much better training signal);
- one example per (prefix -> next item) pair, the prefix right-aligned so the target is learnt
  in the window's last slot, the one serving reads (``--examples prefixes``, RecBole's way,
  ``sequential_data.prefix_batches``). The alternative, one example per user with a target at
  every slot (``--examples sequences``, the original SASRec's way), costs about an eighth of the
  encoder work but learns all but the last target in slots with other position embeddings
  than serving uses: on Beauty validation (sampled softmax, 20 epochs, patience 5) prefixes
  reached NDCG@10 0.0704 / 0.0500 (history excluded / kept) against 0.0630 / 0.0452;
- batches bucketed by length and trimmed to their longest history; the loss only at target
  slots (no logits computed for padding);
- the loss scores each position against every item (the full softmax) in catalogues of up to
  100,000 items, against 2,048 items drawn uniformly per batch in larger ones (``--negatives N``
  sets the draws, 0 = full). On Beauty the full softmax costs about 0.67 s per batch of 256
  users on one contended core, the sampled one about 0.2 s, and it is worth it: test NDCG@10
  0.0610 / 0.0444 (history excluded / kept) against 0.0573 / 0.0411 on Beauty, 0.0656 / 0.0464
  against 0.0626 / 0.0430 on Toys, the only setting that beat RecBole's SASRec clearly;
- AdamW, dropout on inputs, attention and feed-forward layers; ID dropout (see the model);
- optionally a contrastive regulariser (``--cl-weight``, DuoRec/CL4SRec style): two dropout
  views of the same histories, InfoNCE between their user vectors, in-batch negatives;
- validation NDCG@10 (full ranking, history items excluded, exactly as ``shelfwise eval rec``
  computes it) after every epoch; the best state is kept and training stops after
  ``--patience`` epochs without improvement.

Against RecBole's SASRec, screened with ``--examples sequences`` (Beauty, validation NDCG@10
history excluded / kept, RecBole's rule being "kept"), one change at a time, with the
sampled loss, at most 20 epochs,
patience 5 (baseline 0.0630 / 0.0452 at epoch 18): ``--block post`` (RecBole's block: post-LN,
LayerNorm + dropout on the embedding sum, no sqrt(dim) scaling) 0.0620 / 0.0455;
``--positions start`` 0.0591 / 0.0434 at its 15-epoch cap (baseline at epoch 15: 0.0601 /
0.0442); ``--no-attributes`` 0.0592 / 0.0425; ``--id-dropout 0`` 0.0637 / 0.0452; ``--dim 128``
0.0634 / 0.0438 at its 15-epoch cap (it converges in about half the epochs, then overfits). None
is a clear gain. ``--dim 128`` with the full softmax (``--negatives 0 --patience 5``; patience 5
gives the baseline run its same best epoch) reached 0.0666 / 0.0465 at epoch 12 of 17, against
0.0669 / 0.0471 (epoch 24) for the default width: the defaults stay. What holds our "kept"
figure down: at evaluation the user vector points at the newest history item, which every
model here ranks first for 81-95% of validation users (the full-softmax model puts 40% of its
probability on it in eval mode, 12% with training dropout on), though no item ever recurs in
these files. ``--untied-output`` (score against the item vectors plus a learned per-item
correction, zero at the start; ``--output-decay`` pulls it back to tied) trades one figure for
the other, with prefixes and the sampled loss (validation at epoch 10, baseline 0.0669 / 0.0489):
no decay 0.0691 / 0.0540, best at epoch 10 of 20 (test 0.0553 / 0.0431 against the default's
0.0573 / 0.0411), the newest item first for 79% of validation users instead of 91%; decay 10
0.0666 / 0.0496. It overfits sooner (training loss 4.43 at epoch 20 against about 5.0), so it
stays off. Sequences longer
than ``max_length + 1`` train only their newest positions (127 Beauty users, 2.6% of the
training pairs); ``--all-positions`` trains the rest too (not screened).

For a shop's own (small) logs, ``train_model(..., RecSettings(validate=False, epochs=N))``
trains on every item for a fixed number of epochs, with no hold-out.

Output (default ``build/rec/<dataset>/``): ``model.pt`` (config + weights of the best epoch),
``config.json`` (model config, settings, dataset) and ``training_report.json`` (seconds, epochs,
best validation metrics, per-epoch curve, machine). ``--no-progress`` prints one line per epoch
instead of progress bars, for a log file (``build/rec/<dataset>/train.log`` by convention).
Ctrl-C (SIGINT) or ``kill`` (SIGTERM) after the first validated epoch stops the run and saves
the best epoch so far, with ``"interrupted": true`` in the report and exit status 130.

After every epoch the run also writes ``checkpoint.pt`` (weights, optimizer, random states,
best epoch so far, curve). ``--resume`` continues from it, epoch for epoch as if never stopped
(a test holds it to identical weights): a run of hours survives a reboot, a preempted node or
a session that ends. It must be given the first run's options; only ``--epochs``,
``--patience`` and ``--log-history-kept`` may change, so a stopped-early run can also be given
more patience.

Usage::

    shelfwise train rec --dataset beauty [--epochs 200] [--patience 10] [--threads 1] [--seed 42]
    shelfwise train rec --dataset beauty --resume     # after Ctrl-C, kill or a reboot
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from training.rec.sequential_data import (
    SequenceData,
    dataset_key,
    eval_split,
    load_amazon,
    long_sequence_windows,
    prefix_batches,
    training_batches,
    training_pairs,
    training_sequences,
)

if TYPE_CHECKING:  # torch is imported lazily: `--help` stays instant
    from training.rec.sequential_model import SequentialRecommender

# Validation NDCG@10 has to beat the best so far by more than this to count as progress.
MIN_IMPROVEMENT = 1e-5

# Up to this many items the loss is the full softmax by default; beyond, its logits (batch x
# items) and their gradient outgrow a training machine's memory and time, and uniform draws
# estimate it. 100,000 items: 256 x 100k floats, about 100 MB per batch.
FULL_SOFTMAX_MAX_ITEMS = 100_000
SAMPLED_NEGATIVES = 2048

CHECKPOINT_NAME = "checkpoint.pt"
# Settings a resumed run may change: they decide when to stop and what is logged, not what is
# learnt in an epoch.
RESUMABLE_CHANGES = ("epochs", "patience", "log_history_kept")


@dataclass(frozen=True)
class RecSettings:
    dim: int = 64
    max_length: int = 50
    block: str = "pre"          # see ModelConfig.block
    positions: str = "end"      # see ModelConfig.positions
    # Train every (prefix -> next item) pair of sequences longer than max_length + 1 (in
    # windows, sequential_data.long_sequence_windows), not only their newest max_length ones.
    all_positions: bool = False
    # "sequences": one example per user sequence, a target at every slot (training_batches);
    # "prefixes": one example per (prefix -> next item) pair, the target in the last slot, as
    # RecBole trains SASRec (prefix_batches).
    examples: str = "prefixes"
    num_layers: int = 2
    num_heads: int = 2
    dropout: float = 0.5
    attention_dropout: float = 0.5
    id_dropout: float = 0.1
    untied_output: bool = False     # see ModelConfig.untied_output
    # AdamW weight decay of the untied output correction only: pulls it back to tied.
    output_decay: float = 0.0
    use_attributes: bool = True
    epochs: int = 200
    patience: int = 10
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    max_grad_norm: float = 5.0
    # Items scored per position in the loss: 0 (or >= the catalogue) = the full softmax over
    # all items; otherwise this many uniform draws per batch (see softmax_loss). None: chosen
    # by catalogue size (default_negatives) when training starts.
    negatives: int | None = None
    # With sampled negatives: also score each position against its own history items (see
    # history_negative_logits). Off: on Beauty it lowered the best validation NDCG@10 from
    # 0.0644 to 0.0619 (history excluded, the protocol) while raising it with the history kept
    # in the ranking from 0.0446 to about 0.047.
    history_negatives: bool = False
    cl_weight: float = 0.0
    cl_temperature: float = 1.0
    validate: bool = True
    # Also log validation NDCG@10 with history items left in the ranking (RecBole's rule);
    # never used for model selection.
    log_history_kept: bool = False
    seed: int = 42


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    seconds: float
    valid: dict | None = None

    def to_json(self) -> dict:
        return {"epoch": self.epoch, "loss": round(self.loss, 5), "seconds": round(self.seconds, 2),
                **({"valid": self.valid} if self.valid else {})}


@dataclass
class TrainingProgress:
    """What the finished epochs have earned; saved after each of them (`save_checkpoint`)."""

    records: list[EpochRecord] = field(default_factory=list)
    best_ndcg: float = -1.0
    best_epoch: int = 0
    best_state: dict | None = None
    best_valid: dict | None = None
    waited: int = 0              # epochs since the best one
    seconds: float = 0.0         # wall time of the finished epochs, validation included
    eval_seconds: float = 0.0


def default_negatives(num_items: int) -> int:
    """`RecSettings.negatives` when none is given: 0 (the full softmax) for catalogues of up to
    FULL_SOFTMAX_MAX_ITEMS items, SAMPLED_NEGATIVES uniform draws per batch beyond."""
    return 0 if num_items <= FULL_SOFTMAX_MAX_ITEMS else SAMPLED_NEGATIVES


def resolve_settings(settings: RecSettings, data: SequenceData) -> RecSettings:
    """`settings` with the choices left to the data made (the number of negatives), as the run
    uses, saves and reports them."""
    if settings.negatives is None:
        return replace(settings, negatives=default_negatives(data.num_items))
    return settings


def save_checkpoint(path: Path, data: SequenceData, settings: RecSettings, model, optimizer,
                    progress: TrainingProgress, rng: random.Random) -> None:
    """Everything `--resume` needs to go on as if the run had never stopped, written to a
    staging file and renamed so that a kill mid-write leaves the previous checkpoint intact."""
    import torch

    state = {
        "dataset": data.name, "num_items": data.num_items, "settings": asdict(settings),
        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "python_rng": rng.getstate(), "torch_rng": torch.get_rng_state(),
        # Not asdict(progress): it would deep-copy the best weights once more.
        "progress": {**vars(progress), "records": [asdict(r) for r in progress.records]},
    }
    staging = path.with_name(path.name + ".partial")
    torch.save(state, staging)
    os.replace(staging, path)


def load_checkpoint(path: Path, data: SequenceData, settings: RecSettings) -> dict:
    """The checkpoint at `path`, refused (ValueError) if it was written for other data or with
    settings that change what an epoch learns."""
    import torch

    if not path.exists():
        raise FileNotFoundError(f"no checkpoint to resume at {path}: start the run without --resume "
                                "(or point --out at the folder of the run to continue)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if (state["dataset"], state["num_items"]) != (data.name, data.num_items):
        raise ValueError(f"{path} was trained on {state['dataset']} ({state['num_items']} items), not "
                         f"{data.name} ({data.num_items} items)")
    differences = [f"{name} {state['settings'].get(name)!r} there, {value!r} now"
                   for name, value in asdict(settings).items()
                   if name not in RESUMABLE_CHANGES and state["settings"].get(name) != value]
    if differences:
        raise ValueError(f"cannot resume {path} with other settings ({'; '.join(differences)}): give the "
                         f"options of the run that wrote it; only {', '.join(RESUMABLE_CHANGES)} may change")
    progress = state["progress"]
    progress["records"] = [EpochRecord(**r) for r in progress["records"]]
    state["progress"] = TrainingProgress(**progress)
    return state


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(data: SequenceData, settings: RecSettings) -> "SequentialRecommender":
    from training.rec.sequential_model import ModelConfig, SequentialRecommender

    use_attributes = settings.use_attributes and data.attributes is not None and data.num_attributes > 0
    config = ModelConfig(
        num_items=data.num_items,
        num_attributes=data.num_attributes if use_attributes else 0,
        content_dim=0 if data.content is None else int(data.content.shape[1]),
        dim=settings.dim, max_length=settings.max_length, num_layers=settings.num_layers,
        num_heads=settings.num_heads, dropout=settings.dropout, attention_dropout=settings.attention_dropout,
        id_dropout=settings.id_dropout, block=settings.block, positions=settings.positions,
        untied_output=settings.untied_output,
    )
    return SequentialRecommender(config, data.attributes if use_attributes else None, data.content)


def _info_nce(first, second, temperature: float):
    import torch
    from torch.nn import functional as F

    first, second = F.normalize(first, dim=-1), F.normalize(second, dim=-1)
    logits = first @ second.T / temperature
    labels = torch.arange(len(first), device=first.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def softmax_loss(hidden, targets, table, negatives: int = 0, history_logits=None):
    """Cross-entropy of each position's next item against all items, or, with `negatives`
    smaller than the catalogue, against that many items drawn uniformly per batch (shared by
    every position; a draw equal to a position's target is masked). Uniform draws need no
    log-Q correction, so this is the standard sampled estimate of the full softmax.
    `history_logits` [P, H] (masked entries -inf): extra negatives per position, the items of
    its own history, which the full softmax always contains but uniform draws rarely do."""
    import torch
    from torch.nn import functional as F

    num_items = table.shape[0] - 1
    if negatives <= 0 or negatives >= num_items:
        return F.cross_entropy(hidden @ table[1:].T, targets - 1)
    drawn = torch.randint(1, num_items + 1, (negatives,), device=hidden.device)
    positive = (hidden * table[targets]).sum(-1, keepdim=True)
    negative = (hidden @ table[drawn].T).masked_fill(drawn[None, :] == targets[:, None], float("-inf"))
    parts = [positive, negative] if history_logits is None else [positive, negative, history_logits]
    logits = torch.cat(parts, dim=1)
    return F.cross_entropy(logits, torch.zeros(len(targets), dtype=torch.long, device=hidden.device))


def history_negative_logits(output, inputs, targets, table):
    """[B, W, W] scores of each position against the items at and before it in its own row
    (its history), -inf for padding, later slots and the position's own target."""
    import torch

    scores = output @ table[inputs].transpose(1, 2)
    width = inputs.shape[1]
    later = torch.ones(width, width, dtype=torch.bool, device=inputs.device).triu(1)
    masked = later[None] | (inputs[:, None, :] == 0) | (inputs[:, None, :] == targets[:, :, None])
    return scores.masked_fill(masked, float("-inf"))


def parameter_groups(model, settings: RecSettings) -> list[dict]:
    """AdamW groups: everything at `weight_decay`, the untied output correction (if any) at
    `output_decay`."""
    if model.output_embedding is None:
        return [{"params": list(model.parameters())}]
    correction = model.output_embedding.weight
    rest = [p for p in model.parameters() if p is not correction]
    return [{"params": rest}, {"params": [correction], "weight_decay": settings.output_decay}]


def train_epoch(model, train_seqs: list[list[int]], settings: RecSettings, optimizer, rng: random.Random,
                bar=None) -> float:
    import torch

    model.train()
    total, count = 0.0, 0
    batches = prefix_batches if settings.examples == "prefixes" else training_batches
    for inputs, targets in batches(train_seqs, settings.batch_size, settings.max_length, rng):
        inputs_t, targets_t = torch.from_numpy(inputs), torch.from_numpy(targets)
        table, scoring = model.item_tables(model.sample_id_keep())
        mask = (inputs_t > 0).float()
        output = model.sequence_output(table[inputs_t], mask)
        real = targets_t > 0
        history = (history_negative_logits(output, inputs_t, targets_t, scoring)[real]
                   if settings.history_negatives else None)
        loss = softmax_loss(output[real], targets_t[real], scoring, settings.negatives, history)
        if settings.cl_weight > 0:
            # A second dropout view of the same histories; the first view's user vector is
            # its last slot.
            second = model.sequence_output(table[inputs_t], mask)[:, -1]
            loss = loss + settings.cl_weight * _info_nce(output[:, -1], second, settings.cl_temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if settings.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
        optimizer.step()
        total += loss.item() * len(inputs)
        count += len(inputs)
        if bar is not None:
            bar.update(len(inputs))
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return total / max(count, 1)


def train_model(data: SequenceData, settings: RecSettings, progress: bool = True,
                checkpoint: Path | None = None, resume: bool = False) -> tuple["SequentialRecommender", dict]:
    """Trains on `data` and returns (the best model in eval mode, a report). With
    `settings.validate` the last two items per user are held out, the second-last stops
    training; without, every item trains for `settings.epochs` epochs. With `checkpoint`, the
    state after every epoch is saved there; with `resume` too, training continues from it."""
    import torch
    from tqdm import tqdm

    from training.rec.eval_rec import evaluate_model

    settings = resolve_settings(settings, data)
    seed_everything(settings.seed)
    rng = random.Random(settings.seed)
    model = build_model(data, settings)
    train_seqs = training_pairs(training_sequences(data.sequences, settings.validate))
    if settings.examples not in ("sequences", "prefixes"):
        raise ValueError(f"examples must be 'sequences' or 'prefixes', not {settings.examples!r}")
    if settings.output_decay and not settings.untied_output:
        raise ValueError("output_decay is for untied_output: a tied model has no output correction to decay")
    if settings.all_positions:
        if settings.examples == "prefixes":
            raise ValueError("all_positions is for examples='sequences': prefixes already train every pair")
        train_seqs = long_sequence_windows(train_seqs, settings.max_length)
    if not train_seqs:
        raise ValueError(f"{data.name}: no user has enough items to train on")
    if resume and checkpoint is None:
        raise ValueError("resume needs the checkpoint path to resume from")
    valid = eval_split(data.sequences, "valid") if settings.validate else None
    examples_per_epoch = (sum(len(s) - 1 for s in train_seqs) if settings.examples == "prefixes"
                          else len(train_seqs))
    optimizer = torch.optim.AdamW(parameter_groups(model, settings), lr=settings.lr,
                                  weight_decay=settings.weight_decay)

    state = TrainingProgress()
    if resume:
        saved = load_checkpoint(checkpoint, data, settings)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        rng.setstate(saved["python_rng"])
        torch.set_rng_state(saved["torch_rng"])
        state = saved["progress"]
    resumed_from = len(state.records)
    started = time.monotonic()
    epochs_bar = tqdm(total=settings.epochs, initial=min(resumed_from, settings.epochs), desc=f"train rec {data.name}",
                      unit="epoch", file=sys.stderr, disable=not progress, position=0)
    # A resumed run that had already run out of patience (and was not given more) is done.
    stopped_early = valid is not None and state.waited >= settings.patience
    interrupted = False
    try:
        for epoch in range(resumed_from + 1, settings.epochs + 1):
            if stopped_early:
                break
            epoch_started = time.monotonic()
            with tqdm(total=examples_per_epoch, desc=f"epoch {epoch}", unit="example", file=sys.stderr, leave=False,
                      disable=not progress, position=1) as bar:
                loss = train_epoch(model, train_seqs, settings, optimizer, rng, bar)
            record = EpochRecord(epoch, loss, time.monotonic() - epoch_started)
            if valid is not None:
                eval_started = time.monotonic()
                metrics = evaluate_model(model, valid, data.num_items, settings.max_length)["metrics"]
                record.valid = {k: round(v, 5) for k, v in metrics.items()}
                if settings.log_history_kept:
                    kept = evaluate_model(model, valid, data.num_items, settings.max_length,
                                          exclude_history=False)["metrics"]
                    record.valid["ndcg@10_history_kept"] = round(kept["ndcg@10"], 5)
                state.eval_seconds += time.monotonic() - eval_started
                if metrics["ndcg@10"] > state.best_ndcg + MIN_IMPROVEMENT:
                    state.best_ndcg, state.best_epoch, state.best_valid = metrics["ndcg@10"], epoch, record.valid
                    state.best_state, state.waited = copy.deepcopy(model.state_dict()), 0
                else:
                    state.waited += 1
            state.records.append(record)
            state.seconds += time.monotonic() - epoch_started
            if checkpoint is not None:
                save_checkpoint(checkpoint, data, settings, model, optimizer, state, rng)
            epochs_bar.update(1)
            postfix = {"loss": f"{loss:.3f}"}
            if record.valid:
                postfix.update(val_ndcg10=f"{record.valid['ndcg@10']:.4f}",
                               best=f"{state.best_ndcg:.4f}@{state.best_epoch}")
            epochs_bar.set_postfix(postfix)
            if not progress:
                print(f"epoch {epoch}: loss {loss:.4f} {json.dumps(record.valid) if record.valid else ''} "
                      f"({record.seconds:.1f}s)", file=sys.stderr, flush=True)
            stopped_early = valid is not None and state.waited >= settings.patience
    except KeyboardInterrupt:
        # Ctrl-C on a run of hours: keep what the validated epochs earned. Without one (or
        # without validation) there is nothing known to be worth keeping.
        if state.best_state is None:
            raise
        interrupted = True
        print(f"\ninterrupted during epoch {len(state.records) + 1}: keeping the best epoch so far, "
              f"{state.best_epoch}", file=sys.stderr, flush=True)
    finally:
        epochs_bar.close()
    if state.best_state is not None:
        model.load_state_dict(state.best_state)
    model.eval()
    report = {
        "dataset": data.name,
        "users": len(data.sequences),
        "items": data.num_items,
        "attributes": model.config.num_attributes,
        "content_dim": model.config.content_dim,
        "training_users": len(train_seqs),
        "settings": asdict(settings),
        # Finished epochs (of every run, when resumed) plus this run's unfinished one, if any.
        "training_seconds": round(state.seconds + (time.monotonic() - started if interrupted else 0.0), 1),
        "validation_seconds": round(state.eval_seconds, 1),
        "epochs_run": len(state.records),
        "resumed_from_epoch": resumed_from,
        "best_epoch": state.best_epoch if valid is not None else len(state.records),
        "stopped_early": stopped_early,
        "interrupted": interrupted,
        "best_valid": state.best_valid,
        "epochs": [r.to_json() for r in state.records],
    }
    return model, report


# ------------------------------------------------------------------------------ command


def default_out(dataset: str) -> Path:
    return Path("build") / "rec" / dataset_key(dataset)


def build_parser() -> argparse.ArgumentParser:
    from services.common.config import shared_data_dir

    defaults = RecSettings()
    parser = argparse.ArgumentParser(
        prog="shelfwise train rec", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--dataset", required=True, help="beauty, sports, toys (or the file stem)")
    parser.add_argument("--data-dir", type=Path, default=shared_data_dir(), help="shared data folder")
    parser.add_argument("--out", type=Path, help="output folder (default: build/rec/<dataset>/)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="maximum epochs (default: %(default)s)")
    parser.add_argument("--patience", type=int, default=defaults.patience,
                        help="epochs without a better validation NDCG@10 before stopping (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr)
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--attention-dropout", type=float, default=defaults.attention_dropout)
    parser.add_argument("--id-dropout", type=float, default=defaults.id_dropout)
    parser.add_argument("--dim", type=int, default=defaults.dim, help="model width (default: %(default)s)")
    parser.add_argument("--block", choices=["pre", "post"], default=defaults.block,
                        help="pre: pre-LayerNorm blocks, sqrt(dim)-scaled item input; post: RecBole-style "
                             "post-LayerNorm blocks with LayerNorm on the embedding sum (default: %(default)s)")
    parser.add_argument("--positions", choices=["end", "start"], default=defaults.positions,
                        help="positions counted from the newest (end) or the oldest (start) item in the window "
                             "(default: %(default)s)")
    parser.add_argument("--all-positions", action=argparse.BooleanOptionalAction, default=defaults.all_positions,
                        help="train every position of sequences longer than the window (default: %(default)s)")
    parser.add_argument("--examples", choices=["sequences", "prefixes"], default=defaults.examples,
                        help="sequences: one example per user, a target at every position; prefixes: one "
                             "example per (prefix -> next item) pair, as RecBole trains (default: %(default)s)")
    parser.add_argument("--untied-output", action="store_true",
                        help="score against the item vectors plus a learned per-item correction, not the "
                             "input vectors themselves")
    parser.add_argument("--output-decay", type=float, default=defaults.output_decay,
                        help="weight decay of the untied output correction (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=defaults.num_layers)
    parser.add_argument("--heads", type=int, default=defaults.num_heads)
    parser.add_argument("--negatives", type=int, default=defaults.negatives,
                        help="uniformly drawn items per batch in the loss; 0 = full softmax over all items "
                             f"(default: the full softmax up to {FULL_SOFTMAX_MAX_ITEMS:,} items, "
                             f"{SAMPLED_NEGATIVES:,} draws beyond)")
    parser.add_argument("--history-negatives", action="store_true",
                        help="with sampled negatives, add each position's own history items as negatives")
    parser.add_argument("--log-history-kept", action="store_true",
                        help="also log validation NDCG@10 with history items left in the ranking (RecBole's rule)")
    parser.add_argument("--no-attributes", action="store_true", help="ID embeddings only")
    parser.add_argument("--cl-weight", type=float, default=defaults.cl_weight,
                        help="weight of the contrastive regulariser (0 = off)")
    parser.add_argument("--cl-temperature", type=float, default=defaults.cl_temperature)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--no-progress", action="store_true", help="one line per epoch instead of progress bars")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue the run in --out from its {CHECKPOINT_NAME} (written after every epoch); "
                             f"give the same options, only {', '.join('--' + o.replace('_', '-') for o in RESUMABLE_CHANGES)} "
                             "may change")
    return parser


def run(args) -> int:
    import torch

    from training.rec.sequential_model import save_model

    torch.set_num_threads(max(1, args.threads))
    settings = RecSettings(
        dim=args.dim, block=args.block, positions=args.positions, all_positions=args.all_positions,
        examples=args.examples,
        epochs=args.epochs, patience=args.patience, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, dropout=args.dropout, attention_dropout=args.attention_dropout,
        id_dropout=args.id_dropout, untied_output=args.untied_output,
        output_decay=args.output_decay, negatives=args.negatives,
        history_negatives=args.history_negatives,
        log_history_kept=args.log_history_kept, num_layers=args.layers, num_heads=args.heads,
        use_attributes=not args.no_attributes, cl_weight=args.cl_weight, cl_temperature=args.cl_temperature,
        seed=args.seed, validate=True,
    )
    data = load_amazon(args.dataset, args.data_dir, with_attributes=settings.use_attributes)
    settings = resolve_settings(settings, data)
    out = args.out or default_out(args.dataset)
    out.mkdir(parents=True, exist_ok=True)
    loss = "full softmax" if settings.negatives <= 0 else f"{settings.negatives:,} sampled negatives per batch"
    print(f"{data.name}: {len(data.sequences)} users, {data.num_items} items, {data.num_attributes} attributes; "
          f"{loss}; output {out}", file=sys.stderr, flush=True)
    if not args.resume and (out / CHECKPOINT_NAME).exists():
        print(f"note: starting over; the checkpoint of an earlier run in {out} is replaced after the first epoch "
              "(stop now and add --resume to continue that run instead)", file=sys.stderr, flush=True)
    # Ctrl-C and `kill` (SIGTERM, also what Kubernetes sends) both stop training and keep the best
    # epoch (train_model). Set explicitly: a process started in the background by a script
    # inherits SIGINT ignored, and Python then never raises KeyboardInterrupt.
    previous = {s: signal.signal(s, signal.default_int_handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        model, report = train_model(data, settings, progress=not args.no_progress,
                                    checkpoint=out / CHECKPOINT_NAME, resume=args.resume)
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)
    save_model(model, out / "model.pt")
    (out / "config.json").write_text(json.dumps({
        "dataset": data.name, "model": model.config.to_json(), "settings": asdict(settings),
    }, indent=2) + "\n", encoding="utf-8")
    report["machine"] = {
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
    }
    report["command"] = "shelfwise train rec " + " ".join(args.argv)
    (out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    best = report["best_valid"] or {}
    notes = [" (interrupted before early stopping)"] if report["interrupted"] else []
    if report["resumed_from_epoch"]:
        notes.append(f"; resumed after epoch {report['resumed_from_epoch']}")
    print(f"{data.name}: best validation NDCG@10 {best.get('ndcg@10', float('nan')):.4f} "
          f"Recall@10 {best.get('recall@10', float('nan')):.4f} at epoch {report['best_epoch']} of "
          f"{report['epochs_run']} ({report['training_seconds']:.0f}s, {torch.get_num_threads()} threads); "
          f"saved {out / 'model.pt'}{''.join(notes)}")
    return 130 if report["interrupted"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

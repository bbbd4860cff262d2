"""Training the sequential recommender: its settings, the losses (full or sampled softmax with
history negatives, the contrastive term), one epoch, the loop with validation NDCG@10 and early
stopping, and checkpoints a killed run resumes from. `shelfwise train rec`
(training/rec/train_rec.py) and training on the shop's events (rec_catalog.py) both run it."""

from __future__ import annotations

import copy
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.rec.sequential_data import (
    SequenceData,
    eval_split,
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


@dataclass(frozen=True)
class RunState:
    """What a run holds between epochs and a checkpoint keeps: the model, the optimizer, the
    progress so far and the Python random stream (torch's is read globally)."""

    model: Any
    optimizer: Any
    progress: TrainingProgress
    rng: random.Random


def save_checkpoint(path: Path, data: SequenceData, settings: RecSettings, run: RunState) -> None:
    """Everything `--resume` needs to go on as if the run had never stopped, written to a
    staging file and renamed so that a kill mid-write leaves the previous checkpoint intact."""
    import torch

    model, optimizer, progress, rng = run.model, run.optimizer, run.progress, run.rng

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
                save_checkpoint(checkpoint, data, settings, RunState(model, optimizer, state, rng))
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

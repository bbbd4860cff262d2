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
import json
import os
import platform
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from training.rec.rec_training import (
    CHECKPOINT_NAME,
    FULL_SOFTMAX_MAX_ITEMS,
    RESUMABLE_CHANGES,
    SAMPLED_NEGATIVES,
    RecSettings,
    resolve_settings,
    train_model,
)
from training.rec.sequential_data import dataset_key, load_amazon

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
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--events" in argv:  # the served model, trained on this shop's logged interactions
        from training.rec.rec_catalog import main as train_on_events

        return train_on_events(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv
    try:
        return run(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

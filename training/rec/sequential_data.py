"""Purchase sequences for the sequential recommender: reading, the leave-one-out split, batches.

The Amazon benchmark files (``amazon_seq/`` in the shared data folder, DESIGN §4) have one line
per user, ``user_id item_id item_id ...`` in time order with item ids from 1, and an
``<name>_item2attributes.json`` of brand/category attribute ids per item. They are read in
place (``services.common.config.shared_data_dir()``), never copied.

Leave-one-out, the protocol of the published figures: per user the last item is the test
target, the second-last the validation target, the rest is training. Training pairs are every
prefix of the training part predicting its next item (of a sequence longer than the window,
batches keep the newest ``max_length`` pairs; ``long_sequence_windows`` splits it so that all
train); evaluation histories are everything before the target (validation: ``seq[:-2]``, test:
``seq[:-1]``).

Sequences enter the model RIGHT-aligned in a window of ``max_length`` slots: the newest item
sits in the last slot, padding (id 0) on the left. Training batches are trimmed to their
longest sequence (users are bucketed by length), which on Beauty (about 9 items per user) cuts
the work per batch several times compared with always padding to 50.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

# Short names of the three benchmark files (the file stem is accepted too).
DATASETS = {
    "beauty": "Beauty",
    "sports": "Sports_and_Outdoors",
    "toys": "Toys_and_Games",
}


@dataclass
class SequenceData:
    name: str
    sequences: list[list[int]]          # one per user, item ids 1..num_items in time order
    num_items: int
    attributes: list[list[int]] | None = None   # index = item id (0 unused): attribute ids 1..num_attributes
    num_attributes: int = 0
    content: np.ndarray | None = None   # [num_items + 1, content_dim] float32 fixed item features, row 0 zeros


def dataset_stem(name: str) -> str:
    """`beauty` -> `Beauty`; a file stem such as `Sports_and_Outdoors` is returned as is."""
    key = name.strip()
    if key.lower() in DATASETS:
        return DATASETS[key.lower()]
    for stem in DATASETS.values():
        if key.lower() == stem.lower():
            return stem
    raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)} or a file stem "
                     f"({', '.join(DATASETS.values())})")


def dataset_key(name: str) -> str:
    """The short name (`beauty`) used for output folders; a file stem maps to its short name."""
    stem = dataset_stem(name)
    return next(key for key, value in DATASETS.items() if value == stem)


def amazon_seq_dir(data_dir: Path | None = None) -> Path:
    from services.common.config import shared_data_dir

    return Path(data_dir if data_dir is not None else shared_data_dir()) / "amazon_seq"


def read_sequences(path: Path) -> list[list[int]]:
    sequences = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split()
            if not fields:
                continue
            items = [int(v) for v in fields[1:]]
            if not items or min(items) < 1:
                raise ValueError(f"{path}:{number}: a user needs item ids >= 1")
            sequences.append(items)
    return sequences


def read_attributes(path: Path, num_items: int) -> tuple[list[list[int]], int]:
    """Attribute ids per item id (index 0 and items without attributes: empty lists)."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    attributes: list[list[int]] = [[] for _ in range(num_items + 1)]
    top = 0
    for item, values in raw.items():
        item_id = int(item)
        if 1 <= item_id <= num_items:
            attributes[item_id] = sorted({int(v) for v in values})
            top = max([top, *attributes[item_id]])
    return attributes, top


def load_amazon(name: str, data_dir: Path | None = None, with_attributes: bool = True) -> SequenceData:
    """One of the three benchmark files (short name or file stem) with its attributes."""
    stem = dataset_stem(name)
    folder = amazon_seq_dir(data_dir)
    path = folder / f"{stem}.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (set SHELFWISE_DATA_DIR to the shared data folder)")
    sequences = read_sequences(path)
    num_items = max(max(s) for s in sequences)
    data = SequenceData(name=stem, sequences=sequences, num_items=num_items)
    attribute_path = folder / f"{stem}_item2attributes.json"
    if with_attributes and attribute_path.exists():
        data.attributes, data.num_attributes = read_attributes(attribute_path, num_items)
    return data


# ------------------------------------------------------------------------------ split


@dataclass
class EvalSet:
    """Histories and targets of one evaluation split (one entry per evaluated user)."""

    users: np.ndarray            # index into SequenceData.sequences
    histories: list[list[int]]   # everything before the target, oldest first
    targets: np.ndarray          # item id


def training_sequences(sequences: list[list[int]], validate: bool = True) -> list[list[int]]:
    """The part of each sequence the model may learn from: without the last two items when a
    validation and a test item are held out, the whole sequence otherwise."""
    return [s[:-2] for s in sequences] if validate else [list(s) for s in sequences]


def eval_split(sequences: list[list[int]], split: str) -> EvalSet:
    """Leave-one-out: `valid` predicts the second-last item from what precedes it, `test` the
    last item from everything before it. Users too short for the split are left out (none in
    the 5-core benchmark files)."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', not {split!r}")
    offset = 2 if split == "valid" else 1
    users, histories, targets = [], [], []
    for user, seq in enumerate(sequences):
        if len(seq) < offset + 1:
            continue
        users.append(user)
        histories.append(seq[: len(seq) - offset])
        targets.append(seq[len(seq) - offset])
    return EvalSet(np.asarray(users, dtype=np.int64), histories, np.asarray(targets, dtype=np.int64))


def item_counts(sequences: list[list[int]], num_items: int) -> np.ndarray:
    """Interactions per item id (index 0 unused) — the popularity baseline's scores."""
    counts = np.zeros(num_items + 1, dtype=np.float64)
    for seq in sequences:
        np.add.at(counts, np.asarray(seq, dtype=np.int64), 1)
    return counts


# ---------------------------------------------------------------------------- batches


def right_aligned(histories: list[list[int]], max_length: int, width: int | None = None) -> np.ndarray:
    """[len(histories), width] int64: the newest `width` items of each history in the last
    slots, zeros (padding) on the left. `width` defaults to max_length."""
    width = max_length if width is None else min(width, max_length)
    out = np.zeros((len(histories), width), dtype=np.int64)
    for row, history in enumerate(histories):
        tail = history[-width:]
        if tail:
            out[row, width - len(tail):] = tail
    return out


def training_pairs(train_sequences: list[list[int]], min_length: int = 2) -> list[list[int]]:
    """Sequences that yield at least one (prefix -> next item) pair."""
    return [s for s in train_sequences if len(s) >= min_length]


def long_sequence_windows(train_sequences: list[list[int]], max_length: int) -> list[list[int]]:
    """Every sequence longer than `max_length + 1` items split into windows of at most
    `max_length + 1` items (consecutive windows share one item), newest window first, so that
    every (prefix -> next item) pair of a long sequence trains once, not only its newest
    `max_length` ones (the first target of an older window sees a shorter history than the full
    prefix). Windows shorter than two items are left out; shorter sequences pass unchanged."""
    out = []
    for seq in train_sequences:
        end = len(seq)
        while True:
            window = seq[max(0, end - (max_length + 1)):end]
            if len(window) >= 2:
                out.append(window)
            if end - (max_length + 1) <= 0:
                break
            end -= max_length
    return out


def _length_bucketed(examples: list, length, batch_size: int, bucket_batches: int, rng: random.Random) -> list[list]:
    """`examples` in batches of `batch_size`: shuffled, then sorted by `length(example)` inside
    groups of `bucket_batches` batches, so each batch holds similar lengths (little padding)
    while the batch order stays random."""
    order = list(examples)
    rng.shuffle(order)
    group = batch_size * bucket_batches
    batches = []
    for start in range(0, len(order), group):
        chunk = sorted(order[start:start + group], key=length)
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def training_batches(
    train_sequences: list[list[int]],
    batch_size: int,
    max_length: int,
    rng: random.Random,
    bucket_batches: int = 50,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(inputs, targets) int64 [B, W]: inputs are seq[:-1], targets seq[1:], right-aligned and
    trimmed to the longest sequence of the batch (W <= max_length); of a sequence longer than
    `max_length + 1` only the newest `max_length` targets train (``long_sequence_windows``
    first trains them all). Users are bucketed by length (``_length_bucketed``)."""
    users = list(range(len(train_sequences)))
    for batch in _length_bucketed(users, lambda u: len(train_sequences[u]), batch_size, bucket_batches, rng):
        seqs = [train_sequences[u][-(max_length + 1):] for u in batch]
        width = min(max_length, max(len(s) for s in seqs) - 1)
        inputs = right_aligned([s[:-1] for s in seqs], max_length, width)
        targets = right_aligned([s[1:] for s in seqs], max_length, width)
        yield inputs, targets


def prefix_batches(
    train_sequences: list[list[int]],
    batch_size: int,
    max_length: int,
    rng: random.Random,
    bucket_batches: int = 50,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """One example per (prefix -> next item) pair, as RecBole trains SASRec: inputs [B, W] the
    newest `max_length` items of the prefix, right-aligned, and targets [B, W] zero except the
    last slot, which holds the next item. Every target is thus learnt in the slot that serving
    reads (the newest item in the last window slot); ``training_batches`` learns all but the
    last target of a sequence in earlier slots, with other position embeddings. It costs more
    encoder work per epoch (a prefix of k items is encoded once per target instead of once per
    sequence) for the same number of scored targets. Pairs are bucketed by prefix length
    (``_length_bucketed``)."""
    pairs = [(user, end) for user, seq in enumerate(train_sequences) for end in range(1, len(seq))]
    for batch in _length_bucketed(pairs, lambda pair: min(pair[1], max_length), batch_size, bucket_batches, rng):
        prefixes = [train_sequences[user][max(0, end - max_length):end] for user, end in batch]
        width = max(len(prefix) for prefix in prefixes)
        inputs = right_aligned(prefixes, max_length, width)
        targets = np.zeros_like(inputs)
        targets[:, -1] = [train_sequences[user][end] for user, end in batch]
        yield inputs, targets

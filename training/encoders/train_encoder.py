"""`shelfwise train encoder`: fine-tune the multilingual text encoder on (query, product) pairs
taken from a catalogue and relevance judgments, with early stopping on a dev split.

Inputs are the evaluation formats of DESIGN §5, so any judged data plugs in: a catalogue file
(the import format), one or more query files (``qid<TAB>query``) and TREC qrels
(``qid 0 docid grade``; grade > 0 is relevant). Without inputs the Instacart aisle benchmark is
built (``training.search.instacart``) and its *train* split (English and Chinese queries) trains while
its *dev* split stops training. The *test* split is for reporting only: a query or qrels file
whose name says "test" is refused unless ``--allow-test`` is given.

Training (the usual recipe for bi-encoders such as E5 and sentence-transformers' MNRL):

- each step samples a batch of distinct queries and one random relevant product per query;
- the loss is InfoNCE over the batch: a query's positive is its own product, every other
  product in the batch is a negative, except those the qrels say are relevant to that query
  too (several queries describe the same aisle, so without this mask the model would be taught
  to push apart exactly the pairs the judgments call relevant);
- texts are embedded as the served model embeds them: the base model's "query: " /
  "passage: " prefixes, BERT, attention-mask mean pooling, L2 normalisation (the wrapper of
  ``training.encoders.export``), so the scores trained on are the scores served;
- the word-embedding matrix stays frozen (250k x 384 in multilingual-e5: most of the
  parameters, slow to update on a CPU, and the rows of words seen in a few hundred queries
  would drift away from the rest of the vocabulary); everything else trains with AdamW and a
  linear warm-up then decay, or, with ``--lora``, only LoRA adapters on the attention and
  feed-forward projections (peft), merged into the weights before saving.

Early stopping: NDCG@10 (ir-measures, through ``training.search.eval_search.evaluate_run``) of dense
retrieval over a fixed candidate pool: every product relevant to a dev query plus a seeded
sample of other catalogue products (about 5,000 texts on Instacart, half a minute on 2 cores,
where the whole catalogue would take twice that). The base model is evaluated first; the best state seen is kept and
training stops after ``--patience`` evaluations without improvement.

Output: the best model as a transformers directory ``build/encoders/<timestamp>/`` and, when it
beat the base model on dev, exported as the next version of ``text_encoder_multilingual``
(``training.encoders.export.export_sentence_encoder``) with a ``training_report.json`` next to its
metadata. Every run is seeded and repeatable on the same machine.

Usage::

    shelfwise train encoder                      # Instacart train split, dev for early stopping
    shelfwise train encoder --catalog products.jsonl --queries q.en.tsv --queries q.zh.tsv \\
        --qrels train.qrels --dev-queries dev.tsv --dev-qrels dev.qrels [--lora]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from services.common.model_versions import next_version as next_free_version
from training.encoders.sentence_encoder import EncoderVersion, ReferenceCheck, TextFormat, export_sentence_encoder

# Never reach for the Hugging Face hub: bases are local directories.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

if TYPE_CHECKING:  # torch is imported lazily: `--help` and the input checks stay instant
    import torch

DEFAULT_MODEL_NAME = "text_encoder_multilingual"
BASES = ("multilingual-e5", "minilm")
# The served encoder truncates at 128 tokens; dev evaluation embeds like the served model does,
# so the dev numbers are the exported model's numbers.
EVAL_MAX_LENGTH = 128
EVAL_BATCH_SIZE = 128
# Dev NDCG@10 has to beat the best so far by more than this to count as an improvement
# (float noise between two nearly identical states is not progress).
MIN_IMPROVEMENT = 1e-4
# A filename token that starts with "test" (test.qrels, test_queries.tsv, testset.tsv), but not
# "latest" or "contest".
_TEST_NAME = re.compile(r"(?<![a-z])test", re.IGNORECASE)


class HeldOutSplitError(ValueError):
    """A training or early-stopping input is (by its name) the held-out test split."""


# ------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class TrainingSettings:
    # Measured on the Instacart benchmark (236 training queries, batch 32, lr 3e-5, a 240-step
    # schedule): dev NDCG@10 0.399 (base), 0.508 at step 40, 0.534 at 80, 0.532 at 120, then
    # 0.508 at 160 and 0.498 at 200 as the model memorised the 59 training aisles. 120 steps
    # with an evaluation every 20 bracket that peak and keep a run within ~10 minutes on 2 cores.
    steps: int = 120
    batch_size: int = 32
    learning_rate: float | None = None  # None: 3e-5 full fine-tuning, 5e-4 LoRA
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    temperature: float = 0.05
    max_length: int = 40
    eval_every: int = 20
    patience: int = 3
    pool_others: int = 3000
    seed: int = 13
    lora: bool = False
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    max_grad_norm: float = 1.0
    # Per query and step, this many extra negatives drawn from BM25's top results that the
    # qrels do not judge relevant ("Root Beer" for "beers coolers"): the lexical look-alikes
    # that random in-batch negatives almost never show the model. Off by default: on the
    # Instacart dev split one per query gave 0.522 dev NDCG@10 (best at step 40) against 0.547
    # without; the look-alikes are often products a shopper would accept (label noise).
    hard_negatives: int = 0

    @property
    def lr(self) -> float:
        if self.learning_rate is not None:
            return self.learning_rate
        # Adapters start at zero and have few parameters: they need a much larger step.
        return 5e-4 if self.lora else 3e-5

    def describe(self) -> str:
        method = (f"LoRA r={self.lora_rank} alpha={self.lora_alpha} on query/key/value/dense"
                  if self.lora else "full fine-tuning, word embeddings frozen")
        hard = f" + {self.hard_negatives} BM25 hard negative(s) per query" if self.hard_negatives else ""
        return (f"InfoNCE in-batch negatives{hard} (relevant ones masked), t={self.temperature:g}, "
                f"batch {self.batch_size}, max {self.steps} steps, lr {self.lr:g} AdamW "
                f"warm-up {self.warmup_fraction:g} linear decay, {method}, max_length {self.max_length}, "
                f"seed {self.seed}")


# -------------------------------------------------------------------------------- inputs


def says_test(path: Path) -> bool:
    """True when the file's own name marks it as a test split (directories are not read:
    pytest's temporary folders are named after test functions)."""
    return bool(_TEST_NAME.search(Path(path).name))


def refuse_test_files(paths: Sequence[Path | None], allow_test: bool) -> None:
    """Raises HeldOutSplitError naming every input whose name says "test"."""
    named = [str(p) for p in paths if p is not None and says_test(p)]
    if named and not allow_test:
        raise HeldOutSplitError(
            f"refusing to train or early-stop on test-split files: {', '.join(named)}. The test split "
            "is for reporting only; train on the train split, stop on dev "
            "(pass --allow-test only if this file is not a held-out test set)"
        )


@dataclass(frozen=True)
class JudgedQuery:
    qid: str
    text: str
    query_set: str


@dataclass
class PairData:
    """Queries that have at least one relevant product in the catalogue, and those products."""

    queries: list[JudgedQuery]
    relevant: dict[str, frozenset[str]]  # qid -> relevant product ids (in the catalogue)
    skipped: int = 0  # queries without judgments or without a relevant catalogue product
    hard_negatives: dict[str, list[str]] = field(default_factory=dict)  # qid -> mined negatives

    def positives(self, query: JudgedQuery) -> list[str]:
        return sorted(self.relevant[query.qid])


def read_products(catalog: Path):
    from services.retrieval.catalog import read_catalog

    products, errors = read_catalog(Path(catalog))
    if errors:
        raise ValueError(f"{catalog}: {len(errors)} invalid rows, first: {errors[0].message}")
    if not products:
        raise ValueError(f"{catalog}: no products")
    return products


def judged_pairs(query_files: Sequence[Path], qrels_file: Path, product_ids: set[str]) -> PairData:
    """Every (query set, qid) with relevant products; identical query texts are kept once
    (a query may not appear twice in one batch, it would be its own false negative)."""
    from training.search.eval_search import read_qrels, read_queries

    qrels = read_qrels(qrels_file)
    relevant = {
        qid: frozenset(doc for doc, grade in judged.items() if grade > 0 and doc in product_ids)
        for qid, judged in qrels.items()
    }
    queries: list[JudgedQuery] = []
    seen_texts: set[str] = set()
    skipped = 0
    for path in query_files:
        query_set = read_queries(path)
        for qid, text in query_set.queries.items():
            if not relevant.get(qid):
                skipped += 1
                continue
            if text in seen_texts:
                continue
            seen_texts.add(text)
            queries.append(JudgedQuery(qid, text, query_set.name))
    if not queries:
        raise ValueError(f"no query of {', '.join(map(str, query_files))} has a relevant product of the "
                         f"catalogue in {qrels_file}")
    return PairData(queries, {q.qid: relevant[q.qid] for q in queries}, skipped)


def mine_hard_negatives(data: PairData, products, depth: int = 50) -> dict[str, list[str]]:
    """qid -> products in BM25's top ``depth`` for any text of that query id (an English and
    a Chinese query judged alike share their id, so the Chinese one gets the English one's
    look-alikes) that the qrels do not call relevant, best first."""
    from services.retrieval.lexical import LexicalIndex

    index = LexicalIndex()
    index.upsert(products)
    mined: dict[str, list[str]] = {}
    for query in data.queries:
        hits, _ = index.search(query.text, depth)
        negatives = mined.setdefault(query.qid, [])
        negatives += [doc for doc, _ in hits if doc not in data.relevant[query.qid] and doc not in negatives]
    return {qid: negatives for qid, negatives in mined.items() if negatives}


# ------------------------------------------------------------------------------ sampling


@dataclass(frozen=True)
class Batch:
    queries: list[JudgedQuery]
    # One positive per query, in query order, then any hard negatives.
    product_ids: list[str]


class BatchSampler:
    """Batches of distinct queries, each query once per pass over the data (in a seeded
    order), each with one relevant product drawn at random."""

    def __init__(self, data: PairData, batch_size: int, seed: int, hard_negatives: int = 0):
        if batch_size < 2:
            raise ValueError("batch size must be at least 2 (in-batch negatives)")
        self._data = data
        self._batch_size = min(batch_size, len(data.queries))
        self._rng = random.Random(seed)
        self._queue: list[int] = []
        self._hard_negatives = hard_negatives

    @property
    def batch_size(self) -> int:
        return self._batch_size

    def next_batch(self) -> Batch:
        chosen: list[int] = []
        deferred: list[int] = []
        while len(chosen) < self._batch_size:
            if not self._queue:
                order = list(range(len(self._data.queries)))
                self._rng.shuffle(order)
                self._queue = order
            index = self._queue.pop()
            # Across a pass boundary the same query can come up again; it waits for the next batch.
            (deferred if index in chosen else chosen).append(index)
        self._queue.extend(deferred)
        queries = [self._data.queries[i] for i in chosen]
        products = [self._rng.choice(self._data.positives(q)) for q in queries]
        for query in queries:
            pool = self._data.hard_negatives.get(query.qid, [])
            products += self._rng.sample(pool, min(self._hard_negatives, len(pool)))
        return Batch(queries, products)


def false_negative_mask(batch: Batch, relevant: dict[str, frozenset[str]]) -> "torch.Tensor":
    """Bool [B, P] (P products: B positives, then hard negatives): True where product j is
    relevant to query i although it is not i's own positive; those logits are removed from
    query i's softmax. Covers the same product drawn twice, two queries of the same aisle
    (name and description, English and Chinese), and a mined negative another query's
    judgments call relevant."""
    import torch

    mask = torch.zeros((len(batch.queries), len(batch.product_ids)), dtype=torch.bool)
    for i, query in enumerate(batch.queries):
        own = relevant[query.qid]
        for j, product_id in enumerate(batch.product_ids):
            if j != i and product_id in own:
                mask[i, j] = True
    return mask


def info_nce(queries: "torch.Tensor", passages: "torch.Tensor", mask: "torch.Tensor", temperature: float) -> "torch.Tensor":
    """Cross-entropy of each query against the batch's passages, its own at the same index."""
    import torch

    logits = queries @ passages.T / temperature
    logits = logits.masked_fill(mask, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, torch.arange(len(queries)))


# ------------------------------------------------------------------------------- encoder


def mean_pooled(model, input_ids: "torch.Tensor", attention_mask: "torch.Tensor") -> "torch.Tensor":
    """Exactly the exported graph's computation (training.encoders.export's wrapper): token_type_ids
    zero, attention-mask mean pooling of the last hidden state, L2 normalisation."""
    import torch

    outputs = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=torch.zeros_like(input_ids))
    token_embeddings = outputs.last_hidden_state
    mask = attention_mask.unsqueeze(-1).to(token_embeddings.dtype)
    summed = (token_embeddings * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(summed / counts, p=2.0, dim=1)


@dataclass
class Encoder:
    """A transformers encoder, its tokenizer and the prefixes its queries and passages get."""

    model: object
    tokenizer: object
    query_prefix: str = ""
    passage_prefix: str = ""

    def _prefixed(self, texts: Sequence[str], kind: str) -> list[str]:
        prefix = self.query_prefix if kind == "query" else self.passage_prefix
        return [prefix + text for text in texts]

    def embed(self, texts: Sequence[str], kind: str, max_length: int) -> "torch.Tensor":
        """Embeddings with gradients (training)."""
        encoded = self.tokenizer(self._prefixed(texts, kind), padding=True, truncation=True,
                                 max_length=max_length, return_tensors="pt")
        return mean_pooled(self.model, encoded["input_ids"], encoded["attention_mask"])

    def encode(self, texts: Sequence[str], kind: str, max_length: int = EVAL_MAX_LENGTH,
               batch_size: int = EVAL_BATCH_SIZE, desc: str | None = None) -> "torch.Tensor":
        """Embeddings without gradients, in eval mode; batches of similar lengths pad little."""
        import torch
        from tqdm import tqdm

        was_training = self.model.training
        self.model.eval()
        prefixed = self._prefixed(texts, kind)
        order = sorted(range(len(prefixed)), key=lambda i: len(prefixed[i]))
        out = torch.empty((len(prefixed), self.model.config.hidden_size))
        try:
            with torch.no_grad(), tqdm(total=len(prefixed), desc=desc or f"encode {kind}s", unit="text",
                                       leave=False, file=sys.stderr, disable=desc is None) as bar:
                for start in range(0, len(order), batch_size):
                    rows = order[start:start + batch_size]
                    encoded = self.tokenizer([prefixed[i] for i in rows], padding=True, truncation=True,
                                             max_length=max_length, return_tensors="pt")
                    out[rows] = mean_pooled(self.model, encoded["input_ids"], encoded["attention_mask"])
                    bar.update(len(rows))
        finally:
            self.model.train(was_training)
        return out


def load_encoder(base_dir: Path, query_prefix: str, passage_prefix: str) -> Encoder:
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    try:
        # Mean pooling never reads BERT's pooler; without it nothing untrained is saved (e5
        # ships no pooler weights) and LoRA puts no adapter on pooler.dense.
        model = AutoModel.from_pretrained(str(base_dir), dtype=torch.float32, add_pooling_layer=False)
    except TypeError:  # an architecture without a pooler option
        model = AutoModel.from_pretrained(str(base_dir), dtype=torch.float32)
    return Encoder(model, tokenizer, query_prefix, passage_prefix)


def prepare_trainable(encoder: Encoder, settings: TrainingSettings) -> list:
    """Freezes what must not train and returns the parameters that do."""
    if settings.lora:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha,
                            lora_dropout=settings.lora_dropout, bias="none",
                            target_modules=["query", "key", "value", "dense"])
        # peft freezes every base weight (word embeddings included) and adds the adapters.
        encoder.model = get_peft_model(encoder.model, config)
    else:
        encoder.model.get_input_embeddings().weight.requires_grad_(False)
    return [p for p in encoder.model.parameters() if p.requires_grad]


def finished_model(encoder: Encoder):
    """The plain transformers model to save: LoRA adapters merged into the weights."""
    if hasattr(encoder.model, "merge_and_unload"):
        return encoder.model.merge_and_unload()
    return encoder.model


# ------------------------------------------------------------------------ dev evaluation


@dataclass
class DevSet:
    """Dev queries (per query set, since sets share query ids), their qrels and the pool."""

    query_sets: list  # training.search.eval_search.QuerySet
    qrels: dict[str, dict[str, int]]
    pool_ids: list[str]
    pool_texts: list[str]

    @property
    def size(self) -> int:
        return sum(len([q for q in s.queries if q in self.qrels]) for s in self.query_sets)


def build_dev_set(products, query_files: Sequence[Path], qrels_file: Path, pool_others: int, seed: int) -> DevSet:
    """Every product relevant to a dev query, plus ``pool_others`` other products drawn with
    ``seed``: the same pool at every evaluation, so the numbers compare across steps."""
    from training.search.eval_search import read_qrels, read_queries

    query_sets = [read_queries(path) for path in query_files]
    qrels = read_qrels(qrels_file)
    asked = {qid for s in query_sets for qid in s.queries}
    qrels = {qid: judged for qid, judged in qrels.items() if qid in asked}
    if not qrels:
        raise ValueError(f"{qrels_file}: no judgments for the dev queries of {', '.join(map(str, query_files))}")
    by_id = {p.id: p for p in products}
    relevant = sorted({doc for judged in qrels.values() for doc, grade in judged.items() if grade > 0 and doc in by_id})
    taken = set(relevant)
    others = sorted(p.id for p in products if p.id not in taken)
    sample = random.Random(seed).sample(others, min(pool_others, len(others)))
    pool = relevant + sorted(sample)
    return DevSet(query_sets, qrels, pool, [by_id[i].embedding_text() for i in pool])


def evaluate_dev(encoder: Encoder, dev: DevSet) -> float:
    """Mean NDCG@10 over all dev queries of dense retrieval (exact cosine) over the pool."""
    from training.search.eval_search import DEPTH, evaluate_run

    passages = encoder.encode(dev.pool_texts, "passage", desc="dev: encode pool")
    values: list[float] = []
    for query_set in dev.query_sets:
        qids = [qid for qid in query_set.queries if qid in dev.qrels]
        queries = encoder.encode([query_set.queries[q] for q in qids], "query")
        scores = queries @ passages.T
        top = scores.topk(min(DEPTH, scores.shape[1]), dim=1)
        rankings = {
            qid: [(dev.pool_ids[j], float(s)) for j, s in zip(indices.tolist(), row.tolist())]
            for qid, indices, row in zip(qids, top.indices, top.values)
        }
        values += list(evaluate_run(dev.qrels, rankings).per_query["nDCG@10"].values())
    return float(sum(values) / len(values))


# ------------------------------------------------------------------------------ training


@dataclass
class TrainingResult:
    encoder: Encoder
    loss_history: list[float]
    evaluations: list[tuple[int, float]]  # (step, dev NDCG@10); step 0 is the base model
    best_step: int
    steps_run: int
    seconds: float
    fixed_batch_loss: tuple[float, float]  # before, after (best state)
    stopped_early: bool = False
    eval_seconds: float = 0.0  # the part of ``seconds`` spent on dev evaluations

    @property
    def dev_before(self) -> float | None:
        return self.evaluations[0][1] if self.evaluations else None

    @property
    def dev_best(self) -> float | None:
        return dict(self.evaluations).get(self.best_step) if self.evaluations else None


def fixed_batch(data: PairData, size: int = 64) -> Batch:
    """A deterministic batch (the first ``size`` queries, their first relevant product) on
    which the loss is compared before and after training; sampled batches are too noisy."""
    queries = data.queries[:size]
    return Batch(queries, [data.positives(q)[0] for q in queries])


def batch_loss(encoder: Encoder, batch: Batch, relevant: dict[str, frozenset[str]], texts: dict[str, str],
               settings: TrainingSettings) -> "torch.Tensor":
    queries = encoder.embed([q.text for q in batch.queries], "query", settings.max_length)
    passages = encoder.embed([texts[p] for p in batch.product_ids], "passage", settings.max_length)
    return info_nce(queries, passages, false_negative_mask(batch, relevant), settings.temperature)


def eval_loss(encoder: Encoder, batch: Batch, relevant: dict[str, frozenset[str]], texts: dict[str, str],
              settings: TrainingSettings) -> float:
    """The loss without dropout or gradients."""
    import torch

    was_training = encoder.model.training
    encoder.model.eval()
    try:
        with torch.no_grad():
            return float(batch_loss(encoder, batch, relevant, texts, settings))
    finally:
        encoder.model.train(was_training)


def train(encoder: Encoder, data: PairData, texts: dict[str, str], dev: DevSet | None,
          settings: TrainingSettings, progress: bool = True) -> TrainingResult:
    """Trains ``encoder`` in place and leaves it holding the best state (by dev NDCG@10; the
    last state when there is no dev set)."""
    import torch
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    sampler = BatchSampler(data, settings.batch_size, settings.seed, settings.hard_negatives)
    probe = fixed_batch(data)

    started = time.perf_counter()
    loss_before = eval_loss(encoder, probe, data.relevant, texts, settings)
    parameters = prepare_trainable(encoder, settings)
    optimizer = torch.optim.AdamW(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=int(settings.warmup_fraction * settings.steps), num_training_steps=settings.steps)

    def trainable_state() -> dict:
        # Only what trains changes, so only that is copied (the frozen embedding matrix alone
        # is 96M floats in e5).
        return {name: p.detach().clone() for name, p in encoder.model.named_parameters() if p.requires_grad}

    evaluations: list[tuple[int, float]] = []
    eval_seconds = 0.0

    def evaluate() -> float:
        nonlocal eval_seconds
        began = time.perf_counter()
        score = evaluate_dev(encoder, dev)
        eval_seconds += time.perf_counter() - began
        return score

    best_state, best_step, best_score, stale = trainable_state(), 0, float("-inf"), 0
    if dev is not None:
        best_score = evaluate()
        evaluations.append((0, best_score))
        print(f"dev NDCG@10 of the base model: {best_score:.4f} ({dev.size} queries, pool of "
              f"{len(dev.pool_ids)} products)", file=sys.stderr, flush=True)

    history: list[float] = []
    stopped_early = False
    step = 0
    encoder.model.train()
    with tqdm(total=settings.steps, desc="train encoder", unit="step", file=sys.stderr, disable=not progress) as bar:
        for step in range(1, settings.steps + 1):
            loss = batch_loss(encoder, sampler.next_batch(), data.relevant, texts, settings)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            history.append(float(loss.detach()))
            bar.update(1)
            bar.set_postfix(loss=f"{sum(history[-10:]) / len(history[-10:]):.3f}",
                            best=f"{best_score:.4f}" if evaluations else "-")
            if dev is None or (step % settings.eval_every and step != settings.steps):
                continue
            score = evaluate()
            evaluations.append((step, score))
            if score > best_score + MIN_IMPROVEMENT:
                best_state, best_step, best_score, stale = trainable_state(), step, score, 0
            else:
                stale += 1
            bar.write(f"step {step}: dev NDCG@10 {score:.4f} (best {best_score:.4f} at step {best_step})",
                      file=sys.stderr)
            if stale >= settings.patience:
                stopped_early = True
                break
    if dev is None:
        best_step = step
    else:
        with torch.no_grad():
            current = dict(encoder.model.named_parameters())
            for name, value in best_state.items():
                current[name].copy_(value)
    seconds = time.perf_counter() - started
    loss_after = eval_loss(encoder, probe, data.relevant, texts, settings)
    return TrainingResult(encoder, history, evaluations, best_step, step, seconds, (loss_before, loss_after),
                          stopped_early, eval_seconds)


# ------------------------------------------------------------------------------- output


def next_version(model_repository: Path, model_name: str) -> int:
    """One above the highest version folder; version 1 is the zero-shot export, so at least 2."""
    return next_free_version(model_repository, model_name, after=1)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                   "sentencepiece.bpe.model")


def save_hf_directory(encoder: Encoder, base_dir: Path, out_dir: Path) -> Path:
    """The trained weights (LoRA merged) with the base's tokenizer files copied byte for byte:
    training never changes the tokenizer, and re-serialising it could."""
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    encoder.model = finished_model(encoder)
    encoder.model.save_pretrained(str(out_dir), safe_serialization=True)
    for name in TOKENIZER_FILES:
        if (Path(base_dir) / name).is_file():
            shutil.copy2(Path(base_dir) / name, out_dir / name)
    return out_dir


@dataclass
class Inputs:
    catalog: Path
    queries: list[Path]
    qrels: Path
    dev_queries: list[Path] = field(default_factory=list)
    dev_qrels: Path | None = None
    description: str = ""


@dataclass(frozen=True)
class Base:
    name: str  # what the source string and the report call it
    directory: Path
    query_prefix: str
    passage_prefix: str


def resolve_base(base: str, query_prefix: str | None, passage_prefix: str | None) -> Base:
    if base == "multilingual-e5":
        from training.encoders.export import multilingual_source
        from training.encoders.multilingual_e5 import PASSAGE_PREFIX, QUERY_PREFIX, hf_model_dir

        resolved = Base(multilingual_source(), Path(hf_model_dir()), QUERY_PREFIX, PASSAGE_PREFIX)
    elif base == "minilm":
        from training.encoders.export import SOURCE, pretrained_model_path

        resolved = Base(SOURCE, pretrained_model_path(), "", "")
    else:
        directory = Path(base)
        if not (directory / "config.json").is_file():
            raise ValueError(f"--base: {base!r} is neither one of {', '.join(BASES)} nor a transformers directory")
        resolved = Base(str(directory), directory, "", "")
    return Base(resolved.name, resolved.directory,
                resolved.query_prefix if query_prefix is None else query_prefix,
                resolved.passage_prefix if passage_prefix is None else passage_prefix)


def default_inputs(data_dir: Path, benchmark_dir: Path) -> Inputs:
    """The Instacart benchmark: train split (en + zh) to train, dev split (en + zh) to stop."""
    from training.search import instacart

    files = instacart.build(data_dir, benchmark_dir)
    print(f"Instacart benchmark built in {files.folder} from {Path(data_dir) / 'instacart'}", file=sys.stderr, flush=True)
    return Inputs(
        catalog=files.catalog,
        queries=[files.queries("train", "en"), files.queries("train", "zh")],
        qrels=files.qrels("train"),
        dev_queries=[files.queries("dev", "en"), files.queries("dev", "zh")],
        dev_qrels=files.qrels("dev"),
        description="Instacart aisle benchmark (train split en+zh; dev split en+zh for early stopping)",
    )


def build_parser() -> argparse.ArgumentParser:
    defaults = TrainingSettings()
    parser = argparse.ArgumentParser(
        prog="shelfwise train encoder",
        description="Fine-tune the multilingual text encoder on (query, relevant product) pairs with in-batch "
                    "negatives, stop early on dev, export the best model as the next text_encoder_multilingual "
                    "version. Without --catalog/--queries/--qrels: the Instacart benchmark's train split, dev "
                    "split for early stopping. Test-split files are refused.",
    )
    data = parser.add_argument_group("data (all three, or none for the Instacart benchmark)")
    data.add_argument("--catalog", type=Path, help="catalogue file (JSONL, CSV or Parquet)")
    data.add_argument("--queries", type=Path, action="append", help="training qid<TAB>query file (repeatable)")
    data.add_argument("--qrels", type=Path, help="training judgments, TREC qrels (qid 0 docid grade)")
    data.add_argument("--dev-queries", type=Path, action="append",
                      help="dev qid<TAB>query file for early stopping (repeatable)")
    data.add_argument("--dev-qrels", type=Path, help="dev judgments for early stopping")
    data.add_argument("--allow-test", action="store_true",
                      help="accept input files whose name says 'test' (only if they are not a held-out test split)")
    from services.common.config import shared_data_dir

    data.add_argument("--data-dir", type=Path, default=shared_data_dir(),
                      help="folder holding instacart/ (default: $SHELFWISE_DATA_DIR or ../shared/data)")
    data.add_argument("--benchmark-dir", type=Path, default=Path("build") / "benchmarks" / "instacart")

    model = parser.add_argument_group("model")
    model.add_argument("--base", default="multilingual-e5",
                       help=f"{' or '.join(BASES)} or a transformers directory (default: multilingual-e5)")
    model.add_argument("--query-prefix", help="prepended to queries (default: the base's: 'query: ' for e5)")
    model.add_argument("--passage-prefix", help="prepended to product texts (default: 'passage: ' for e5)")
    model.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights")
    model.add_argument("--lora-rank", type=int, default=defaults.lora_rank)
    model.add_argument("--lora-alpha", type=int, default=defaults.lora_alpha)

    training = parser.add_argument_group("training")
    training.add_argument("--steps", type=int, default=defaults.steps, help="maximum steps (default: %(default)s)")
    training.add_argument("--batch-size", type=int, default=defaults.batch_size)
    training.add_argument("--hard-negatives", type=int, default=defaults.hard_negatives,
                          help="BM25-mined negatives per query and step (default: %(default)s)")
    training.add_argument("--lr", type=float, help="learning rate (default: 3e-5, or 5e-4 with --lora)")
    training.add_argument("--warmup", type=float, default=defaults.warmup_fraction, help="warm-up fraction of the steps")
    training.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    training.add_argument("--temperature", type=float, default=defaults.temperature)
    training.add_argument("--max-length", type=int, default=defaults.max_length, help="tokens per training text")
    training.add_argument("--eval-every", type=int, default=defaults.eval_every, help="steps between dev evaluations")
    training.add_argument("--patience", type=int, default=defaults.patience,
                          help="stop after this many dev evaluations without improvement")
    training.add_argument("--pool-others", type=int, default=defaults.pool_others,
                          help="non-relevant catalogue products in the dev candidate pool")
    training.add_argument("--seed", type=int, default=defaults.seed)

    output = parser.add_argument_group("output")
    output.add_argument("--out-dir", type=Path, default=Path("build") / "encoders",
                        help="the trained transformers directory goes to OUT_DIR/<timestamp>/")
    output.add_argument("--model-repository", type=Path,
                        default=Path(os.environ.get("SHELFWISE_MODEL_REPOSITORY", "model_repository")))
    output.add_argument("--model-name", help="model to add a version to (default: text_encoder_multilingual for "
                                             "multilingual-e5, text_encoder for minilm; required for a directory)")
    output.add_argument("--no-export", action="store_true", help="save the transformers directory only")
    output.add_argument("--no-verify", action="store_true", help="skip the export's numerical checks")
    return parser


def settings_from(args) -> TrainingSettings:
    return TrainingSettings(
        steps=args.steps, batch_size=args.batch_size, learning_rate=args.lr, warmup_fraction=args.warmup,
        weight_decay=args.weight_decay, temperature=args.temperature, max_length=args.max_length,
        eval_every=args.eval_every, patience=args.patience, pool_others=args.pool_others, seed=args.seed,
        lora=args.lora, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, hard_negatives=args.hard_negatives,
    )


def resolve_inputs(args, parser: argparse.ArgumentParser) -> Inputs:
    given = [name for name in ("catalog", "queries", "qrels") if getattr(args, name)]
    if given and len(given) != 3:
        parser.error("--catalog, --queries and --qrels go together (or give none for the Instacart benchmark)")
    if bool(args.dev_queries) != bool(args.dev_qrels):
        parser.error("--dev-queries and --dev-qrels go together")
    if not given:
        if args.dev_queries:
            parser.error("--dev-queries/--dev-qrels need --catalog, --queries and --qrels")
        return default_inputs(args.data_dir, args.benchmark_dir)
    refuse_test_files([*args.queries, args.qrels, *(args.dev_queries or []), args.dev_qrels], args.allow_test)
    for path in [args.catalog, *args.queries, args.qrels, *(args.dev_queries or []), *([args.dev_qrels] if args.dev_qrels else [])]:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file")
    return Inputs(args.catalog, list(args.queries), args.qrels, list(args.dev_queries or []), args.dev_qrels,
                  description=f"{args.catalog.name}, queries {', '.join(p.name for p in args.queries)}, qrels {args.qrels.name}")


def model_name_for(args) -> str:
    if args.model_name:
        return args.model_name
    if args.base == "multilingual-e5":
        return DEFAULT_MODEL_NAME
    if args.base == "minilm":
        return "text_encoder"
    raise ValueError("--model-name is required when --base is a directory")


def run(args, parser: argparse.ArgumentParser) -> int:
    began = time.perf_counter()
    settings = settings_from(args)
    if settings.steps < 1 or settings.eval_every < 1 or settings.patience < 1:
        parser.error("--steps, --eval-every and --patience must be positive")
    inputs = resolve_inputs(args, parser)
    model_name = None if args.no_export else model_name_for(args)
    base = resolve_base(args.base, args.query_prefix, args.passage_prefix)

    products = read_products(inputs.catalog)
    texts = {p.id: p.embedding_text() for p in products}
    data = judged_pairs(inputs.queries, inputs.qrels, set(texts))
    if settings.hard_negatives < 0:
        parser.error("--hard-negatives must be >= 0")
    if settings.hard_negatives:
        data.hard_negatives = mine_hard_negatives(data, products)
    dev = None
    if inputs.dev_qrels is not None:
        dev = build_dev_set(products, inputs.dev_queries, inputs.dev_qrels, settings.pool_others, settings.seed)
        shared = set(data.relevant) & set(dev.qrels)
        if shared:
            print(f"warning: {len(shared)} query ids are judged in both the training and the dev qrels "
                  f"(e.g. {sorted(shared)[0]!r}): early stopping will be optimistic", file=sys.stderr)
    print(f"training on {len(data.queries)} queries ({data.skipped} without relevant products skipped), "
          f"{len({p for r in data.relevant.values() for p in r})} relevant products; base {base.name}",
          file=sys.stderr, flush=True)
    print(f"settings: {settings.describe()}", file=sys.stderr, flush=True)

    encoder = load_encoder(base.directory, base.query_prefix, base.passage_prefix)
    result = train(encoder, data, texts, dev, settings)
    out_dir = save_hf_directory(result.encoder, base.directory, fresh_folder(args.out_dir))
    report = training_report(base, inputs, settings, result, data, dev)
    write_report(report, out_dir)
    print(f"training took {result.seconds:.0f}s, {result.eval_seconds:.0f}s of it dev evaluations "
          f"({result.steps_run} steps, best at step {result.best_step}); "
          f"fixed-batch loss {result.fixed_batch_loss[0]:.4f} -> {result.fixed_batch_loss[1]:.4f}", flush=True)
    if dev is not None:
        print(f"dev NDCG@10 (pool of {len(dev.pool_ids)}): {result.dev_before:.4f} -> {result.dev_best:.4f}", flush=True)
    print(f"model saved to {out_dir}", flush=True)

    exported = None
    improved = dev is None or result.best_step > 0
    if model_name is not None and improved:
        version = next_version(args.model_repository, model_name)
        destination = EncoderVersion(Path(args.model_repository), model_name, version,
                                     source_string(base, inputs, settings, result))
        exported = export(out_dir, destination, base, training_reference(result.encoder, data, texts, dev),
                          verify=not args.no_verify)
        report["exported"] = {"model": model_name, "version": version, "path": str(exported)}
        write_report(report, out_dir, exported)
        print(f"exported {model_name} version {version} to {exported}", flush=True)
    print(f"whole run: {time.perf_counter() - began:.0f}s", flush=True)
    if model_name is not None and exported is None:
        print("no training step beat the base model on dev: nothing exported", flush=True)
        return 3
    return 0


def fresh_folder(parent: Path) -> Path:
    """``parent/<UTC timestamp>``, never one that already exists."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    candidate, n = Path(parent) / stamp, 1
    while candidate.exists():
        n += 1
        candidate = Path(parent) / f"{stamp}-{n}"
    return candidate


def write_report(report: dict, *folders: Path) -> None:
    text = json.dumps(report, indent=2, ensure_ascii=False) + "\n"
    for folder in folders:
        (Path(folder) / "training_report.json").write_text(text)


def source_string(base: Base, inputs: Inputs, settings: TrainingSettings, result: TrainingResult) -> str:
    dev = (f"; dev NDCG@10 {result.dev_before:.4f} -> {result.dev_best:.4f}" if result.evaluations else "")
    return (f"{base.name}, fine-tuned by shelfwise train encoder on {inputs.description}: "
            f"{settings.describe()}; best step {result.best_step} of {result.steps_run}{dev}")


def training_reference(encoder: Encoder, data: PairData, texts: dict[str, str], dev: DevSet | None):
    """The training-time embedding (transformers tokenizer, this module's pooling) as the
    export's reference: the served graph must score what training scored (cosine >= 0.9999)
    on training and dev queries, in every language they come in, and on product texts."""
    queries = [q.text for q in data.queries[:24]]
    if dev is not None:
        queries += [text for s in dev.query_sets for text in list(s.queries.values())[:12]]
    passages = [texts[p] for p in sorted({data.positives(q)[0] for q in data.queries})[:24]]
    if dev is not None:
        passages += dev.pool_texts[:24]

    def embed(batch: Sequence[str], kind: str):
        return encoder.encode(batch, kind).numpy()

    return ReferenceCheck(
        name="the training-time encoder",
        embed=embed,
        texts=[("query", t) for t in queries] + [("passage", t) for t in passages],
        min_cosine=0.9999,
    )


def export(hf_dir: Path, destination: EncoderVersion, base: Base, reference, verify: bool) -> Path:
    """Exports ``hf_dir`` and returns the version folder."""
    model_file = export_sentence_encoder(
        hf_dir, destination, TextFormat(base.query_prefix, base.passage_prefix),
        verify=verify, reference=reference if verify else None,
    )
    return Path(model_file).parent


def training_report(base: Base, inputs: Inputs, settings: TrainingSettings, result: TrainingResult,
                    data: PairData, dev: DevSet | None) -> dict:
    return {
        "base": {"name": base.name, "directory": str(base.directory),
                 "query_prefix": base.query_prefix, "passage_prefix": base.passage_prefix},
        "data": {
            "description": inputs.description,
            "catalog": str(inputs.catalog),
            "queries": [str(p) for p in inputs.queries],
            "qrels": str(inputs.qrels),
            "training_queries": len(data.queries),
            "dev_queries": [str(p) for p in inputs.dev_queries],
            "dev_qrels": str(inputs.dev_qrels) if inputs.dev_qrels else None,
            "dev_query_count": dev.size if dev else 0,
            "dev_pool_products": len(dev.pool_ids) if dev else 0,
        },
        "settings": {**asdict(settings), "learning_rate": settings.lr},
        "steps_run": result.steps_run,
        "best_step": result.best_step,
        "stopped_early": result.stopped_early,
        "training_seconds": round(result.seconds, 1),
        "dev_evaluation_seconds": round(result.eval_seconds, 1),
        "dev_ndcg10_before": result.dev_before,
        "dev_ndcg10_after": result.dev_best,
        "dev_evaluations": [{"step": s, "ndcg10": v} for s, v in result.evaluations],
        "fixed_batch_loss": {"before": result.fixed_batch_loss[0], "after": result.fixed_batch_loss[1]},
        "train_loss_per_step": [round(v, 5) for v in result.loss_history],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return run(args, parser)
    except (HeldOutSplitError, ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

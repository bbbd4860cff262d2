"""The fine-tuning loop of `shelfwise train encoder`: its settings, in-batch sampling with hard
negatives and false-negative masking, the InfoNCE loss, dev evaluation (NDCG@10 over a pool,
embedded as the served model embeds) and early stopping on it."""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from training.encoders.encoder_data import JudgedQuery, PairData
from training.encoders.encoder_model import Encoder

if TYPE_CHECKING:  # torch is imported lazily: `--help` and the input checks stay instant
    import torch

# Dev NDCG@10 has to beat the best so far by more than this to count as an improvement
# (float noise between two nearly identical states is not progress).
MIN_IMPROVEMENT = 1e-4


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


@dataclass
class DevSet:
    """Dev queries (per query set, since sets share query ids), their qrels and the pool."""

    query_sets: list  # training.search.search_judgments.QuerySet
    qrels: dict[str, dict[str, int]]
    pool_ids: list[str]
    pool_texts: list[str]

    @property
    def size(self) -> int:
        return sum(len([q for q in s.queries if q in self.qrels]) for s in self.query_sets)


def build_dev_set(products, query_files: Sequence[Path], qrels_file: Path, pool_others: int, seed: int) -> DevSet:
    """Every product relevant to a dev query, plus ``pool_others`` other products drawn with
    ``seed``: the same pool at every evaluation, so the numbers compare across steps."""
    from training.search.search_judgments import read_qrels, read_queries

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
    from training.search.search_judgments import DEPTH, evaluate_run

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
    with tqdm(total=settings.steps, desc="train encoder", unit="step", file=sys.stderr,
              disable=not progress or not sys.stderr.isatty()) as bar:
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

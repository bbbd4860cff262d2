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

Early stopping: NDCG@10 (ir-measures, through ``training.search.search_judgments.evaluate_run``) of dense
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
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from services.common.model_versions import next_version as next_free_version
from training.encoders.encoder_data import (
    HeldOutSplitError,
    PairData,
    judged_pairs,
    mine_hard_negatives,
    read_products,
    refuse_test_files,
)
from training.encoders.encoder_model import Encoder, finished_model, load_encoder
from training.encoders.encoder_training import DevSet, TrainingResult, TrainingSettings, build_dev_set, train
from training.encoders.sentence_encoder import EncoderVersion, ReferenceCheck, TextFormat, export_sentence_encoder

# Never reach for the Hugging Face hub: bases are local directories.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


DEFAULT_MODEL_NAME = "text_encoder_multilingual"
BASES = ("multilingual-e5", "minilm")


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
        from training.encoders.e5_tokenizer import PASSAGE_PREFIX, QUERY_PREFIX
        from training.encoders.multilingual_e5 import hf_model_dir

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

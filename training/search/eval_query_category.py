"""`shelfwise eval query-category`: the query -> category classifier that search uses, measured.

The classifier is ranking's category vote (`services.ranking.relevance.category_vote`): a
query's category is the weighted vote of its nearest labelled examples in the English space
(the 50 nearest, each weighted by exp((cosine - best) / 0.05)), as ranking computes it from the
candidates retrieval found. Its labelled examples are whatever the shop has:

- **Instacart**: the catalogue's product titles, labelled with their department (the catalogue
  category); the queries of a benchmark split (``--split``, dev by default) are classified into
  the department of the aisle they ask for. Chinese queries are read through query
  understanding's English rendering, as the English space reads them. This is the classifier
  exactly as served.
- **WANDS** (Wayfair queries and their product class) and **Best Buy** (popular queries and
  their top ``hierarchicalCategories.lvl1`` facet): no catalogue comes with them, so the labelled
  examples are other queries (the "queries -> categories clicked" case a shop with search logs
  has), in the seeded stratified split of `training.search.eval_query_understanding`.

Baselines on the same examples and queries: the majority class of the examples, and a BM25
vote (the categories of the 30 best BM25 matches among the examples, one vote each: retrieval's
own tantivy index, what ranking's lexical vote reads). Accuracy and macro-F1 with
percentile-bootstrap 95% intervals over the queries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from services.ranking.relevance import DENSE_VOTERS, LEXICAL_VOTERS, VOTE_TEMPERATURE, category_vote
from training.stats import Resampling

ENGLISH_ENCODER = "text_encoder"


def vote_predictions(example_vectors: np.ndarray, example_labels: Sequence[str], query_vectors: np.ndarray) -> list[str]:
    """The served classifier: each query's top category by the weighted vote of its nearest examples."""
    predictions = []
    for scores in query_vectors @ example_vectors.T:
        shares = category_vote(example_labels, scores, DENSE_VOTERS, VOTE_TEMPERATURE).top(1)
        predictions.append(shares[0][0] if shares else "")
    return predictions


def bm25_predictions(example_texts: Sequence[str], example_labels: Sequence[str], queries: Sequence[str],
                     majority: str) -> list[str]:
    """The lexical baseline: the vote of the 30 best BM25 matches (the majority class when
    nothing matches)."""
    from services.retrieval.catalog import Product
    from services.retrieval.lexical import LexicalIndex

    index = LexicalIndex()
    index.upsert([Product(id=str(i), title=text, price=0.0) for i, text in enumerate(example_texts)])
    predictions = []
    for query in queries:
        hits, _ = index.search(query, LEXICAL_VOTERS)
        labels = [example_labels[int(doc)] for doc, _ in hits]
        shares = category_vote(labels, np.array([score for _, score in hits]), LEXICAL_VOTERS).top(1) if hits else []
        predictions.append(shares[0][0] if shares else majority)
    return predictions


async def _encode(repository: Path, texts: Sequence[str], kind: str) -> np.ndarray:
    from services.common.inference import EmbeddedOnnxRuntime
    from services.common.text_encoder import TextEncoder

    encoder = TextEncoder(EmbeddedOnnxRuntime(repository), model_name=ENGLISH_ENCODER)
    return await encoder.encode(list(texts), kind=kind, timeout=600)


@dataclass(frozen=True)
class Encoded:
    """Texts with their category labels and their (query-encoder) vectors, row for row."""

    texts: Sequence[str]
    labels: Sequence[str]
    vectors: np.ndarray


def compare(examples: Encoded, queries: Encoded, lexical_queries: Sequence[str], resampling: Resampling) -> dict:
    """Each method's predictions for `queries` from the labelled `examples`, scored against the
    queries' labels (`lexical_queries`: the texts BM25 searches, e.g. with translations)."""
    from training.search.query_classification import classification_report

    example_labels, example_vectors = examples.labels, examples.vectors
    truth, query_vectors = queries.labels, queries.vectors
    queries, examples = queries.texts, examples.texts

    majority = Counter(example_labels).most_common(1)[0][0]
    methods = {
        "majority class": [majority] * len(queries),
        "BM25 vote": bm25_predictions(examples, example_labels, lexical_queries, majority),
        "category vote (served)": vote_predictions(example_vectors, example_labels, query_vectors),
    }
    return {name: classification_report(truth, predicted, resampling.samples, resampling.seed)
            for name, predicted in methods.items()}


def instacart(args) -> dict:
    """Titles -> departments; the split's queries (every query set) -> their aisle's department."""
    from services.query_understanding.understanding import QueryUnderstander
    from services.retrieval.catalog import read_catalog
    from services.retrieval.retriever import lexical_text
    from training.search import instacart as benchmark
    from training.search.query_extraction import load_vocabulary
    from training.search.instacart_eval import build_benchmark
    from training.search.search_judgments import read_qrels, read_queries

    files = build_benchmark(args)
    products, errors = read_catalog(files.catalog)
    if errors:
        raise ValueError(f"{files.catalog}: {errors[0].message}")
    category = {p.id: p.category for p in products}
    qrels = read_qrels(files.qrels(args.split))
    understander = QueryUnderstander(load_vocabulary(files.catalog))
    report = {}
    example_vectors = asyncio.run(_encode(args.model_repository, [p.embedding_text() for p in products], "passage"))
    for name in benchmark.QUERY_SETS:
        query_set = read_queries(files.queries(args.split, name))
        texts, english, lexical, truth = [], [], [], []
        for qid, text in query_set.queries.items():
            departments = Counter(category[doc] for doc, grade in qrels[qid].items() if grade > 0)
            understood = understander.understand(text)
            texts.append(text)
            english.append(understood.translation or understood.search_text or text)
            lexical.append(lexical_text(understood.search_text or text, understood.translation))
            truth.append(departments.most_common(1)[0][0])
        vectors = asyncio.run(_encode(args.model_repository, english, "query"))
        report[f"{args.split}.{name}"] = compare(
            Encoded([p.title for p in products], [p.category for p in products], example_vectors),
            Encoded(texts, truth, vectors), lexical, Resampling(args.bootstrap, args.seed),
        )
    return report


def labelled_queries(data, args) -> dict:
    """Other queries as the labelled examples (seeded stratified split)."""
    from training.search.query_classification import stratified_split

    train, test = stratified_split(data.labels, args.test_fraction, args.seed)
    vectors = asyncio.run(_encode(args.model_repository, data.texts, "query"))
    pick = lambda values, rows: [values[i] for i in rows]  # noqa: E731
    return compare(
        Encoded(pick(data.texts, train), pick(data.labels, train), vectors[train]),
        Encoded(pick(data.texts, test), pick(data.labels, test), vectors[test]), pick(data.texts, test),
        Resampling(args.bootstrap, args.seed),
    )


def print_report(name: str, results: dict) -> None:
    print(f"\n{name}")
    for method, r in results.items():
        print(f"  {method:<24} n={r['n']:<5} accuracy {r['accuracy']:.3f} [{r['accuracy_ci95'][0]:.3f}, "
              f"{r['accuracy_ci95'][1]:.3f}]   macro-F1 {r['macro_f1']:.3f} [{r['macro_f1_ci95'][0]:.3f}, "
              f"{r['macro_f1_ci95'][1]:.3f}]")


def main(argv: Sequence[str] | None = None) -> int:
    from training.search.query_classification import DEFAULT_SEED, DEFAULT_TEST_FRACTION, read_bestbuy, read_wands
    from training.search.instacart_eval import add_benchmark_arguments

    parser = argparse.ArgumentParser(prog="shelfwise eval query-category", description=__doc__.split("\n\n")[0])
    add_benchmark_arguments(parser)
    parser.add_argument("--split", choices=("train", "dev", "test"), default="dev",
                        help="Instacart queries to classify (default dev; test is for the final report)")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION,
                        help="WANDS / Best Buy queries held out (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap samples for the intervals")
    parser.add_argument("--out", type=Path, help="write the report as JSON")
    args = parser.parse_args(argv)
    report = {}
    try:
        for name, results in instacart(args).items():
            report[f"instacart {name} (titles -> department)"] = results
        for reader in (read_wands, read_bestbuy):
            data = reader(args.data_dir)
            report[f"{data.name} (queries -> class, {args.test_fraction:.0%} held out)"] = labelled_queries(data, args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for name, results in report.items():
        print_report(name, results)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

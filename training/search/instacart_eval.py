"""`shelfwise eval instacart` and `shelfwise tune fusion`: build the Instacart benchmark
(training/search/instacart.py), then run the search evaluation on a split's English, Chinese
and misspelt query sets, or grid-search retrieval's fusion settings on the dev split."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from services.common.config import model_repository, shared_data_dir
from services.local.running import run_until_stopped
from training.search.eval_search import DEFAULT_CACHE, HYBRID_DENSE, Evaluation, pipeline_name, run_command
from training.search.search_judgments import DEPTH, evaluate_run, read_qrels, read_queries


def add_benchmark_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=shared_data_dir(),
                        help="folder holding instacart/ (default: $SHELFWISE_DATA_DIR or ../shared/data)")
    parser.add_argument("--benchmark-dir", type=Path, default=Path("build") / "benchmarks" / "instacart",
                        help="where the built catalogue, queries and qrels go (not committed: data licence)")
    parser.add_argument("--model-repository", type=Path, default=model_repository())
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)


def build_benchmark(args):
    from training.search import instacart

    files = instacart.build(args.data_dir, args.benchmark_dir)
    counts = instacart.split_summary(args.data_dir)
    print(f"Instacart benchmark in {files.folder}: aisles with queries per split "
          + ", ".join(f"{split} {count}" for split, count in counts.items()), flush=True)
    return files


async def instacart_command(args) -> int:
    """Build the benchmark, then evaluate the split's en, zh and misspelled query sets."""
    from training.search import instacart

    try:
        files = build_benchmark(args)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    args.catalog = files.catalog
    args.queries = [files.queries(args.split, name) for name in instacart.QUERY_SETS]
    args.qrels = files.qrels(args.split)
    args.out = args.out or Path("build") / "reports" / f"instacart-{args.split}.json"
    args.plot = args.plot or Path("build") / "reports" / f"instacart-{args.split}.png"
    code = await run_command(args)
    if code == 0:
        print(f"report: {args.out}  plot: {args.plot}")
    return code


async def tune_fusion_command(args) -> int:
    """Grid-search the fusion settings of retrieval's three lists on the dev split (never the
    test split). Fusion picks the candidates ranking orders, and their order when ranking is
    down; the query sets are read without query understanding (no rendering of Chinese)."""
    from services.retrieval.fusion import Fusion

    files = build_benchmark(args)
    evaluation = Evaluation(
        catalog=files.catalog,
        query_sets=[read_queries(files.queries("dev", name)) for name in ("en", "zh")],
        qrels=read_qrels(files.qrels("dev")),
        pipelines=["bm25", *HYBRID_DENSE],
        model_repository=args.model_repository,
        cache=args.cache,
    )
    await evaluation.run()
    grid = []
    for k in (5, 10, 20, 40, 60, 100):
        for weight in (0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5):
            for multilingual in (0.25, 0.5, 1.0):
                fusion = Fusion(k=k, lexical_weight=weight, multilingual_weight=multilingual)
                values = []
                for query_set in evaluation.query_sets:
                    lists = [evaluation.rankings[(name, query_set.name)] for name in ("bm25", *HYBRID_DENSE)]
                    fused = {qid: fusion.fuse_rankings(*(ranking[qid] for ranking in lists))[:DEPTH] for qid in lists[0]}
                    values += list(evaluate_run(evaluation.qrels, fused).per_query["nDCG@10"].values())
                grid.append((float(np.mean(values)), k, weight, multilingual))
    grid.sort(reverse=True)
    print(f"dev split, bm25 + {' + '.join(HYBRID_DENSE)}, NDCG@10 over {len(values)} en+zh queries (best first):")
    for score, k, weight, multilingual in grid[:10]:
        print(f"  k={k:<4g} lexical_weight={weight:<5g} multilingual_weight={multilingual:<5g} NDCG@10={score:.4f}")
    default = next(score for score, k, weight, multilingual in grid if (k, weight, multilingual) == (60, 1.0, 1.0))
    print(f"  (plain RRF k=60, weights 1/1/1: {default:.4f})")
    best = grid[0]
    print(f"best: SHELFWISE_FUSION_K={best[1]:g} SHELFWISE_FUSION_LEXICAL_WEIGHT={best[2]:g} "
          f"SHELFWISE_FUSION_MULTILINGUAL_WEIGHT={best[3]:g}")
    return 0


def instacart_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="shelfwise eval instacart",
        description="Build the Instacart aisle benchmark and evaluate every pipeline on one split.",
    )
    add_benchmark_arguments(parser)
    parser.add_argument("--split", choices=["train", "dev", "test"], default="test")
    parser.add_argument("--pipeline", action="append", type=pipeline_name,
                        help="repeat to restrict (default: all available); dense-multilingual@N pins version N")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--runs", type=Path, help="also write TREC run files into this folder")
    return run_until_stopped(instacart_command(parser.parse_args(argv)))


def tune_fusion_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="shelfwise eval tune-fusion",
                                     description="Tune lexical/dense fusion on the Instacart dev split.")
    add_benchmark_arguments(parser)
    return run_until_stopped(tune_fusion_command(parser.parse_args(argv)))


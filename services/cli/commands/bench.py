"""`shelfwise bench search|suggest|inference|encoding|events|filters`: the benchmarks, each printing
its figures side by side with its baseline from one run (services/cli/bench/ holds them)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.common.config import DEFAULT_TEXT_ENCODER


def register(commands) -> None:
    bench = commands.add_parser("bench", help="benchmarks that print figures")
    bench_commands = bench.add_subparsers(dest="benchmark", required=True)
    bench_search = bench_commands.add_parser(
        "search", help="open-loop load on Search: full pipeline vs BM25-only, same services, same run"
    )
    bench_search.add_argument("--address", help="a running gateway on loopback, started with the bench experiment "
                              "(default: start a local system with a synthetic catalogue for the run)")
    bench_search.add_argument("--rate", type=float, default=50.0, help="requests per second (fixed arrival rate)")
    bench_search.add_argument("--duration", type=float, default=60.0, help="seconds measured per configuration")
    bench_search.add_argument("--warmup", type=float, default=5.0, help="seconds at the same rate before each, not measured")
    bench_search.add_argument("--deadline", type=float, default=2.0, help="per-call deadline, seconds")
    bench_search.add_argument("--max-in-flight", type=int, default=64,
                              help="outstanding calls at most; an arrival beyond is counted as CLIENT_OVERFLOW")
    bench_search.add_argument("--items", type=int, default=10_000, help="synthetic catalogue size (own system only)")
    bench_search.add_argument("--seed", type=int, default=7, help="seed of the synthetic catalogue and queries")
    bench_search.add_argument(
        "--only", type=configurations, help="the configurations to measure, in order, comma-separated: full, bm25, "
        "facets (the full pipeline asking for four facets), repeats allowed; default full,bm25")
    bench_search.add_argument("--retrieval-replicas", type=int, default=1,
                              help="retrieval processes of the own system, called round robin (default: %(default)s)")
    bench_search.add_argument("--json", help="also write the figures to this JSON file")
    bench_search.add_argument("--profile", help="run each service under cProfile, <service>.prof in this folder")
    bench_search.add_argument("--data-dir", help="keep PostgreSQL here and reuse its catalogue on the next run with "
                              "the same --items/--seed (default: a temporary folder, built from scratch)")
    bench_search.add_argument("--random-vectors", action="store_true",
                              help="write the synthetic products with random vectors straight into PostgreSQL instead "
                              "of importing them through retrieval's embedding (a large catalogue in minutes; dense "
                              "lists then rank at random; compare configurations with it, not the system's cost)")
    bench_search.add_argument("--model-repository", default="model_repository")
    bench_search.set_defaults(run=run_bench_search)
    bench_suggest = bench_commands.add_parser(
        "suggest", help="open-loop load on the gateway's Suggest (autocomplete) over a synthetic catalogue: "
        "p50/p99 latency and CPU per request, and the index look-up alone")
    bench_suggest.add_argument("--items", type=int, default=10_000, help="synthetic catalogue size")
    bench_suggest.add_argument("--rate", type=float, default=100.0, help="requests per second (fixed arrival rate)")
    bench_suggest.add_argument("--duration", type=float, default=20.0, help="seconds measured")
    bench_suggest.add_argument("--searches", type=int, default=10_000,
                               help="synthetic searches with a click logged first (the query log)")
    bench_suggest.add_argument("--seed", type=int, default=7, help="seed of the catalogue, the log and the prefixes")
    bench_suggest.add_argument("--model-repository", default="model_repository")
    bench_suggest.set_defaults(run=run_bench_suggest)
    bench_inference = bench_commands.add_parser(
        "inference", help="each model on Triton (batched / unbatched) and embedded, at 1-64 clients"
    )
    bench_inference.add_argument("--model-repository", default="model_repository")
    bench_inference.add_argument("--env-dir", default=".venv-triton", help="virtual environment of the local Triton")
    bench_inference.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    bench_inference.set_defaults(run=run_bench_inference)
    bench_encoding = bench_commands.add_parser(
        "encoding", help="catalogue encoding products/s: full batches padded to the length buckets vs to their "
        "longest text, or two versions of the model (--versions)")
    bench_encoding.add_argument("--items", type=int, default=4096, help="products encoded per round")
    bench_encoding.add_argument("--catalog", help="a catalogue file (default: the synthetic catalogue)")
    bench_encoding.add_argument("--seed", type=int, default=7, help="seed of the synthetic catalogue")
    bench_encoding.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    bench_encoding.add_argument("--threads", type=int, help="ONNX Runtime threads (default: the services' own)")
    bench_encoding.add_argument("--model", default=DEFAULT_TEXT_ENCODER, help="text encoder (default: %(default)s)")
    bench_encoding.add_argument("--versions", help="compare these versions of the model instead of the paddings, e.g. 1,2 "
                                "(fp32 against its int8 copy from `shelfwise quantize`); one version: its paddings")
    bench_encoding.add_argument("--model-repository", default="model_repository")
    bench_encoding.set_defaults(run=run_bench_encoding)
    bench_events = bench_commands.add_parser("events", help="events/s through the events service: COPY vs unnest INSERT")
    bench_events.add_argument("--database-url", help="a PostgreSQL to write to (default: an embedded one for the run)")
    bench_events.add_argument("--events", type=int, default=5000, help="impressions per measurement")
    bench_events.add_argument("--batch-sizes", default="10,100,1000", help="events per call, comma-separated")
    bench_events.add_argument("--concurrency", type=int, default=4, help="concurrent clients")
    bench_events.add_argument("--rounds", type=int, default=3, help="alternating rounds per cell (median)")
    bench_events.set_defaults(run=run_bench_events)
    bench_filters = bench_commands.add_parser(
        "filters", help="ms per search of category/brand/attribute/price filters at a catalogue size: "
        "coded columns vs a per-product scan")
    bench_filters.add_argument("--items", type=int, default=100_000, help="synthetic catalogue size")
    bench_filters.add_argument("--rounds", type=int, default=5, help="alternating rounds per filter (median)")
    bench_filters.add_argument("--seed", type=int, default=7, help="seed of the synthetic catalogue")
    bench_filters.set_defaults(run=run_bench_filters)


async def run_bench_inference(args) -> int:
    from services.cli.bench.inference import bench_inference

    print(await bench_inference(Path(args.model_repository), Path(args.env_dir), args.seconds))
    return 0


async def run_bench_encoding(args) -> int:
    from services.cli.bench.encoding import EncodingRuns, bench_encoding, catalog_texts

    if args.items < 1 or args.rounds < 1:
        print("--items and --rounds must be >= 1", file=sys.stderr)
        return 2
    try:
        versions = [int(version) for version in args.versions.split(",")] if args.versions else []
    except ValueError:
        versions = [0]
    if any(version < 1 for version in versions) or len(set(versions)) != len(versions):
        print(f"--versions {args.versions!r} must be distinct version numbers, e.g. 1,2", file=sys.stderr)
        return 2
    texts, source = catalog_texts(Path(args.catalog) if args.catalog else None, args.items, args.seed)
    print(await bench_encoding(Path(args.model_repository), args.model, texts, source,
                               EncodingRuns(args.rounds, args.threads, versions)))
    return 0


async def run_bench_events(args) -> int:
    from services.cli.bench.events import bench_events

    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    print(await bench_events(args.database_url, args.events, batch_sizes, args.concurrency, args.rounds))
    return 0


def run_bench_filters(args) -> int:
    from services.cli.bench.filters import bench_filters

    if args.items < 1 or args.rounds < 1:
        print("--items and --rounds must be >= 1", file=sys.stderr)
        return 2
    print(bench_filters(args.items, args.rounds, args.seed))
    return 0


def configurations(text: str) -> tuple[str, ...]:
    """The phases, in order; one may repeat (`facets,full,facets`: each measured after the other
    has warmed retrieval's query-vector cache on the same queries)."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in ("full", "bm25", "facets")]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"must list full, bm25 and/or facets, comma-separated, got {text!r}")
    return names


async def run_bench_search(args) -> int:
    from services.cli.bench.search import BenchSettings, NotLoopback, OwnSystem, bench_search, check_loopback

    try:
        if args.address is not None:
            check_loopback(args.address)
    except NotLoopback as error:
        print(error, file=sys.stderr)
        return 2
    settings = BenchSettings(
        rate=args.rate, duration=args.duration, warmup=args.warmup, deadline=args.deadline,
        max_in_flight=args.max_in_flight,
        configurations=args.only or ("full", "bm25"),
        retrieval_replicas=args.retrieval_replicas, seed=args.seed,
    )
    if args.retrieval_replicas < 1 or (args.address is not None and args.retrieval_replicas != 1):
        print("--retrieval-replicas must be >= 1, and applies only to the bench's own system", file=sys.stderr)
        return 2
    own = OwnSystem(
        Path(args.model_repository), items=args.items, profile_dir=Path(args.profile) if args.profile else None,
        data_dir=Path(args.data_dir) if args.data_dir else None, random_vectors=args.random_vectors,
    )
    await bench_search(args.address, settings, own, json_path=Path(args.json) if args.json else None)
    return 0


async def run_bench_suggest(args) -> int:
    from services.cli.bench.suggest import bench_suggest

    if args.items < 1 or args.rate <= 0 or args.duration <= 0 or args.searches < 0:
        print("--items, --rate and --duration must be positive, --searches at least 0", file=sys.stderr)
        return 2
    print(await bench_suggest(args.items, args.rate, args.duration, args.searches, args.seed,
                              Path(args.model_repository)))
    return 0

"""`shelfwise`: start the system locally (`up`) and talk to it (`search`, `recommend`, `track`,
`import-catalog`), build its models (`export`, `train`), measure it (`eval`, `bench`)."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
import uuid
from pathlib import Path

from services.local.catalog_import import demo_catalog_path, import_catalog
from services.common.config import DEFAULT_TEXT_ENCODER

DEMO_QUERIES = (
    "something to drink with steak",
    "red runing shoes under $50",
    "noise cancelling headphones",
    "绿茶",
    "gift for a coffee lover",
)


def _gateway_stub(address: str):
    from shelfwise.gateway.v1 import gateway_pb2_grpc

    from services.common.channels import create_channel

    channel = create_channel(address)
    return channel, gateway_pb2_grpc.GatewayServiceStub(channel)


def _print_results(title: str, response) -> None:
    print(f"\n{title}")
    interpretation = getattr(response, "interpretation", None)
    if interpretation is not None and interpretation.corrected_query:
        filters = interpretation.extracted_filters
        notes = [f"language={interpretation.language}", f"matched text={interpretation.search_text!r}"]
        if interpretation.translated_text:
            notes.append(f"also searched as {interpretation.translated_text!r}")
        if filters.price.HasField("min") or filters.price.HasField("max"):
            low = f"{filters.price.min:g}" if filters.price.HasField("min") else ""
            high = f"{filters.price.max:g}" if filters.price.HasField("max") else ""
            notes.append(f"price={low}..{high}")
        if filters.attributes:
            notes.append("attributes=" + ",".join(f"{k}={v}" for k, v in filters.attributes.items()))
        if interpretation.prefers_low_price:
            notes.append("prefers low prices")
        if interpretation.predicted_categories:
            notes.append("categories=" + ", ".join(
                f"{c.category} {c.score:.2f}" for c in interpretation.predicted_categories
            ))
        print(f"  understood: {interpretation.corrected_query!r} ({'; '.join(notes)})")
        print(f"  {response.total_size} products match")
    for note in getattr(response, "notes", ()):
        print(f"  note: {note}")
    if response.degraded_stages:
        print(f"  degraded: {', '.join(response.degraded_stages)}")
    for result in response.results:
        product = result.product
        top = sorted(result.reasons, key=lambda r: -r.contribution)[:2]
        why = ", ".join(f"{r.feature} {r.value:.2f}" for r in top)
        print(f"  {result.position:>3}. {product.title[:60]:<60} {product.price:>8.2f} {product.currency}  "
              f"[{product.category}] score={result.score:.3f} ({why})")
    if not response.results:
        print("  (no results)")
    timings = ", ".join(f"{t.stage} {t.milliseconds:.0f} ms" for t in response.timings)
    print(f"  request_id={response.request_id} model_version={response.model_version} [{timings}]")


async def _search(args) -> int:
    from shelfwise.common.v1 import common_pb2
    from shelfwise.gateway.v1 import gateway_pb2

    channel, stub = _gateway_stub(args.address)
    async with channel:
        filters = common_pb2.Filters(categories=args.category or [], brands=args.brand or [])
        if args.min_price is not None:
            filters.price.min = args.min_price
        if args.max_price is not None:
            filters.price.max = args.max_price
        request = gateway_pb2.SearchRequest(
            query=args.query, page_size=args.page_size, page_token=args.page_token or "", filters=filters,
            user_id=args.user_id or "", session_id=args.session_id or "",
        )
        response = await stub.Search(request, timeout=args.timeout)
    _print_results(f"search {args.query!r}", response)
    if response.next_page_token:
        print(f"  next page: --page-token {response.next_page_token}")
    return 0


def recommend_mode(args):
    """The Recommend mode the options ask for, or None when they are contradictory."""
    from shelfwise.gateway.v1 import gateway_pb2

    if args.cart:
        return None if args.product_id or args.for_user else gateway_pb2.RECOMMEND_MODE_COMPLETE_CART
    if args.for_user or args.history:
        return None if args.product_id else gateway_pb2.RECOMMEND_MODE_FOR_USER
    if bool(args.product_id) == bool(args.category):
        return None
    return gateway_pb2.RECOMMEND_MODE_SIMILAR_ITEMS if args.product_id else gateway_pb2.RECOMMEND_MODE_POPULAR_IN_CATEGORY


async def _recommend(args) -> int:
    from shelfwise.gateway.v1 import gateway_pb2

    mode = recommend_mode(args)
    if mode is None:
        print("give one of: --product-id (similar items), --category alone (popular in category), --for-user "
              "[--history ID ...] (next for this shopper), --cart ID ... (complete the cart)", file=sys.stderr)
        return 2
    channel, stub = _gateway_stub(args.address)
    async with channel:
        response = await stub.Recommend(
            gateway_pb2.RecommendRequest(
                mode=mode, product_id=args.product_id or "", category=args.category or "",
                page_size=args.page_size, user_id=args.user_id or "", session_id=args.session_id or "",
                history_product_ids=args.history or [], cart_product_ids=args.cart or [],
            ),
            timeout=args.timeout,
        )
    what = gateway_pb2.RecommendMode.Name(mode).removeprefix("RECOMMEND_MODE_").lower()
    seed = args.product_id or args.category or ",".join(args.cart or args.history or []) or args.user_id or args.session_id
    _print_results(f"recommend {what} {seed or ''}".rstrip(), response)
    return 0


async def _track(args) -> int:
    from shelfwise.events.v1 import events_pb2
    from shelfwise.gateway.v1 import gateway_pb2

    types = {
        "click": events_pb2.INTERACTION_TYPE_CLICK,
        "add_to_cart": events_pb2.INTERACTION_TYPE_ADD_TO_CART,
        "purchase": events_pb2.INTERACTION_TYPE_PURCHASE,
    }
    channel, stub = _gateway_stub(args.address)
    async with channel:
        interaction = events_pb2.Interaction(
            event_id=args.event_id or uuid.uuid4().hex, type=types[args.type], request_id=args.request_id,
            product_id=args.product_id, position=args.position, user_id=args.user_id or "",
            quantity=args.quantity, value=args.value,
        )
        interaction.occurred_at.GetCurrentTime()
        response = await stub.Track(gateway_pb2.TrackRequest(interactions=[interaction]), timeout=args.timeout)
    print(f"accepted={response.accepted} duplicates={response.duplicates}")
    return 0


async def _import_catalog(args) -> int:
    try:
        inserted, updated = await import_catalog(Path(args.file), args.retrieval_address, args.batch_size)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"imported {inserted + updated} products ({inserted} new, {updated} updated)")
    return 0


async def _up(args) -> int:
    from services.local.system import EmbeddedPostgres, LocalSystem
    from training.encoders.export import main as export_models

    started = time.monotonic()
    repository = Path(args.model_repository).resolve()
    export_models(["--model-repository", str(repository)])  # skips models that are up to date
    data_dir = Path(args.data_dir).resolve()
    postgres = EmbeddedPostgres(data_dir / "postgres")
    database_url = postgres.start()
    print(f"PostgreSQL ready ({time.monotonic() - started:.1f}s)", flush=True)
    triton = None
    system = LocalSystem(database_url, repository, data_dir / "logs")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        if args.triton:
            from services.cli.triton_local import LocalTriton, derive_cpu_repository, ensure_triton_environment

            env_dir = await asyncio.to_thread(ensure_triton_environment, Path(args.triton_env_dir))
            derived = derive_cpu_repository(repository, data_dir / "triton" / "repository")
            triton = LocalTriton(data_dir / "triton" / "repository", env_dir, log_path=data_dir / "logs" / "tritonserver.log")
            await asyncio.to_thread(triton.start)
            system.environ.update({"SHELFWISE_INFERENCE": "triton", "SHELFWISE_TRITON_URL": triton.grpc_url})
            print(f"Triton serving {', '.join(derived)} at {triton.grpc_url} ({time.monotonic() - started:.1f}s)",
                  flush=True)
        await system.start()
        print(f"all five services SERVING ({time.monotonic() - started:.1f}s); logs in {data_dir / 'logs'}", flush=True)
        retrieval = system.address("retrieval")
        catalog = Path(args.catalog) if args.catalog else demo_catalog_path()
        inserted, updated = await import_catalog(catalog, retrieval, progress=False)
        print(f"catalogue {catalog.name}: {inserted} new, {updated} updated products", flush=True)
        # Query understanding picks the new vocabulary up on its next refresh.
        await asyncio.sleep(2.5)
        print(f"ready in {time.monotonic() - started:.1f}s", flush=True)
        gateway = system.address("gateway")
        for query in args.queries or DEMO_QUERIES:
            await _search(argparse.Namespace(
                address=gateway, query=query, page_size=5, page_token="", category=None, brand=None,
                min_price=None, max_price=None, user_id="demo-user", session_id="demo", timeout=10.0,
            ))
        await _demo_recommendations(gateway)
        if args.exit:
            return 0
        print(f"\nShelfwise is running: gateway at {gateway}. Try `shelfwise search \"red wine\"`. Ctrl-C stops.", flush=True)
        await stop.wait()
        return 0
    finally:
        codes = system.stop()
        if triton is not None:
            triton.stop()
        postgres.stop()
        unclean = {service: code for service, code in codes.items() if code != 0}
        print(f"stopped: {'all services exited cleanly' if not unclean else f'unclean exits {unclean}'}", flush=True)


async def _demo_recommendations(gateway: str) -> None:
    """Recommend on the demo catalogue: what completes a cart, and a first-time shopper (cold
    start: popular products, or the session's clicks once there are some)."""
    base = dict(address=gateway, product_id=None, category=None, for_user=False, history=None, cart=None,
                user_id=None, session_id=None, page_size=5, timeout=10.0)
    await _recommend(argparse.Namespace(**dict(base, cart=["sku-redwine-0001"])))
    await _recommend(argparse.Namespace(**dict(base, for_user=True, user_id=f"new-shopper-{uuid.uuid4().hex[:6]}")))


async def _bench_inference(args) -> int:
    from services.cli.bench_inference import bench_inference

    print(await bench_inference(Path(args.model_repository), Path(args.env_dir), args.seconds))
    return 0


async def _bench_encoding(args) -> int:
    from services.cli.bench_encoding import bench_encoding, catalog_texts

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
    print(await bench_encoding(Path(args.model_repository), args.model, texts, source, args.rounds, args.threads,
                               versions))
    return 0


async def _bench_events(args) -> int:
    from services.cli.bench_events import bench_events

    batch_sizes = [int(size) for size in args.batch_sizes.split(",")]
    print(await bench_events(args.database_url, args.events, batch_sizes, args.concurrency, args.rounds))
    return 0


def _bench_filters(args) -> int:
    from services.cli.bench_filters import bench_filters

    if args.items < 1 or args.rounds < 1:
        print("--items and --rounds must be >= 1", file=sys.stderr)
        return 2
    print(bench_filters(args.items, args.rounds, args.seed))
    return 0


def _triton_up(args) -> int:
    from services.cli.triton_local import main as triton_main

    return triton_main(args.rest)


async def _bench_search(args) -> int:
    from services.cli.bench import BenchSettings, NotLoopback, bench_search, check_loopback

    try:
        if args.address is not None:
            check_loopback(args.address)
    except NotLoopback as error:
        print(error, file=sys.stderr)
        return 2
    settings = BenchSettings(
        rate=args.rate, duration=args.duration, warmup=args.warmup, deadline=args.deadline,
        max_in_flight=args.max_in_flight,
        configurations=tuple(args.only.split(",")) if args.only else ("full", "bm25"),
        retrieval_replicas=args.retrieval_replicas,
    )
    if args.retrieval_replicas < 1 or (args.address is not None and args.retrieval_replicas != 1):
        print("--retrieval-replicas must be >= 1, and applies only to the bench's own system", file=sys.stderr)
        return 2
    await bench_search(
        args.address, settings, Path(args.model_repository), items=args.items, seed=args.seed,
        json_path=Path(args.json) if args.json else None, profile_dir=Path(args.profile) if args.profile else None,
        data_dir=Path(args.data_dir) if args.data_dir else None,
    )
    return 0


def _export(args) -> int:
    from training.encoders.export import main as export_main

    return export_main(args.rest)


def _quantize(args) -> int:
    from training.encoders.quantize import main as quantize_main

    return quantize_main(args.rest)


def _eval_search(args):
    from training.search.eval_search import run_command

    return run_command(args)


def _eval_instacart(args):
    from training.search.instacart_eval import instacart_command

    return instacart_command(args)


def _eval_query_understanding(args) -> int:
    from training.search.eval_query_understanding import main as evaluate

    return evaluate(args.rest)


def _eval_query_category(args) -> int:
    from training.search.eval_query_category import main as evaluate

    return evaluate(args.rest)


def _train_encoder(args) -> int:
    from training.encoders.train_encoder import main as train

    return train(args.rest)


def _train_rec(args) -> int:
    if "--events" in args.rest:  # the served model, on this shop's logged interactions
        from training.rec.rec_catalog import main as train_on_events

        return train_on_events(args.rest)
    from training.rec.train_rec import main as train

    return train(args.rest)


def _eval_rec(args) -> int:
    from training.rec.eval_rec import main as evaluate

    return evaluate(args.rest)


def _train_ranker(args) -> int:
    from training.search.train_ranker import main as train

    return train(args.rest)


def _train_ctr(args) -> int:
    from training.ctr.train_ctr import main as train

    return train(args.rest)


def _eval_ctr(args) -> int:
    from training.ctr.eval_ctr import main as evaluate

    return evaluate(args.rest)


def _eval_offpolicy(args) -> int:
    from training.experiments.offpolicy import main as evaluate

    return evaluate(args.rest)


def _report_experiment(args):
    from training.experiments.experiment_report import run_command

    return run_command(args)


def _simulate(args):
    if args.compare == "learning":
        from training.experiments.learning_comparison import compare_learning

        return compare_learning(args)
    from training.experiments.simulator import simulate

    return simulate(args)


def _tune_fusion(args):
    from training.search.instacart_eval import tune_fusion_command

    return tune_fusion_command(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shelfwise", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start PostgreSQL and the five services locally with the demo catalogue")
    up.add_argument("--data-dir", default=".shelfwise", help="where PostgreSQL data and service logs go")
    up.add_argument("--model-repository", default="model_repository")
    up.add_argument("--catalog", help="catalogue file to import instead of the demo catalogue")
    up.add_argument("--query", dest="queries", action="append", help="sample query to run (repeatable)")
    up.add_argument("--exit", action="store_true", help="stop after printing the sample results")
    up.add_argument("--triton", action="store_true", help="serve the models from a local Triton server")
    up.add_argument("--triton-env-dir", default=".venv-triton", help="virtual environment of the local Triton")
    up.set_defaults(run=_up)

    def client(name: str, help_text: str):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--address", default="127.0.0.1:50051", help="gateway address")
        sub.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
        sub.add_argument("--user-id")
        return sub

    search = client("search", "search the catalogue")
    search.add_argument("query")
    search.add_argument("--page-size", type=int, default=10)
    search.add_argument("--page-token")
    search.add_argument("--category", action="append")
    search.add_argument("--brand", action="append")
    search.add_argument("--min-price", type=float)
    search.add_argument("--max-price", type=float)
    search.add_argument("--session-id")
    search.set_defaults(run=_search)

    recommend = client(
        "recommend", "similar products, popular in a category, next for a shopper, or what completes a cart"
    )
    recommend.add_argument("--product-id", help="similar to this product")
    recommend.add_argument("--category", help="popular in this category (alone), or the context of --for-user")
    recommend.add_argument("--for-user", action="store_true",
                           help="next for the shopper: --history, else the events of --user-id / --session-id")
    recommend.add_argument("--history", nargs="+", metavar="PRODUCT_ID", help="the shopper's products, oldest first")
    recommend.add_argument("--cart", nargs="+", metavar="PRODUCT_ID", help="complete this cart")
    recommend.add_argument("--session-id")
    recommend.add_argument("--page-size", type=int, default=10)
    recommend.set_defaults(run=_recommend)

    track = client("track", "record a click, add-to-cart or purchase of a shown product")
    track.add_argument("--request-id", required=True)
    track.add_argument("--product-id", required=True)
    track.add_argument("--position", type=int, required=True)
    track.add_argument("--type", choices=["click", "add_to_cart", "purchase"], default="click")
    track.add_argument("--event-id", help="idempotency key (default: random)")
    track.add_argument("--quantity", type=int, default=1)
    track.add_argument("--value", type=float, default=0.0)
    track.set_defaults(run=_track)

    importer = commands.add_parser("import-catalog", help="import a JSONL/CSV/Parquet catalogue")
    importer.add_argument("file")
    importer.add_argument("--retrieval-address", default="127.0.0.1:50053")
    importer.add_argument("--batch-size", type=int, default=200)
    importer.set_defaults(run=_import_catalog)

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
    bench_search.add_argument("--only", choices=("full", "bm25"), help="measure one configuration only")
    bench_search.add_argument("--retrieval-replicas", type=int, default=1,
                              help="retrieval processes of the own system, called round robin (default: %(default)s)")
    bench_search.add_argument("--json", help="also write the figures to this JSON file")
    bench_search.add_argument("--profile", help="run each service under cProfile, <service>.prof in this folder")
    bench_search.add_argument("--data-dir", help="keep PostgreSQL here and reuse its catalogue on the next run with "
                              "the same --items/--seed (default: a temporary folder, built from scratch)")
    bench_search.add_argument("--model-repository", default="model_repository")
    bench_search.set_defaults(run=_bench_search)
    bench_inference = bench_commands.add_parser(
        "inference", help="each model on Triton (batched / unbatched) and embedded, at 1-64 clients"
    )
    bench_inference.add_argument("--model-repository", default="model_repository")
    bench_inference.add_argument("--env-dir", default=".venv-triton", help="virtual environment of the local Triton")
    bench_inference.add_argument("--seconds", type=float, default=3.0, help="duration of each measurement")
    bench_inference.set_defaults(run=_bench_inference)
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
    bench_encoding.set_defaults(run=_bench_encoding)
    bench_events = bench_commands.add_parser("events", help="events/s through the events service: COPY vs unnest INSERT")
    bench_events.add_argument("--database-url", help="a PostgreSQL to write to (default: an embedded one for the run)")
    bench_events.add_argument("--events", type=int, default=5000, help="impressions per measurement")
    bench_events.add_argument("--batch-sizes", default="10,100,1000", help="events per call, comma-separated")
    bench_events.add_argument("--concurrency", type=int, default=4, help="concurrent clients")
    bench_events.add_argument("--rounds", type=int, default=3, help="alternating rounds per cell (median)")
    bench_events.set_defaults(run=_bench_events)
    bench_filters = bench_commands.add_parser(
        "filters", help="ms per search of category/brand/attribute/price filters at a catalogue size: "
        "coded columns vs a per-product scan")
    bench_filters.add_argument("--items", type=int, default=100_000, help="synthetic catalogue size")
    bench_filters.add_argument("--rounds", type=int, default=5, help="alternating rounds per filter (median)")
    bench_filters.add_argument("--seed", type=int, default=7, help="seed of the synthetic catalogue")
    bench_filters.set_defaults(run=_bench_filters)

    triton = commands.add_parser("triton", help="a real Triton server on this machine (CPU)")
    triton_commands = triton.add_subparsers(dest="triton_command", required=True)
    triton_up = triton_commands.add_parser("up", help="derive the CPU repository and run tritonserver", add_help=False)
    triton_up.add_argument("rest", nargs=argparse.REMAINDER)
    triton_up.set_defaults(run=_triton_up)

    from training.search.eval_search import add_arguments as add_eval_arguments, pipeline_name
    from training.search.instacart_eval import add_benchmark_arguments

    evaluate = commands.add_parser("eval", help="evaluations on data, against baselines, with intervals")
    eval_commands = evaluate.add_subparsers(dest="evaluation", required=True)
    eval_search = eval_commands.add_parser(
        "search", help="relevance of search pipelines on any catalogue, TSV queries and TREC qrels"
    )
    add_eval_arguments(eval_search)
    eval_search.set_defaults(run=_eval_search)
    eval_instacart = eval_commands.add_parser(
        "instacart", help="build the Instacart aisle benchmark and evaluate every pipeline on one split"
    )
    add_benchmark_arguments(eval_instacart)
    eval_instacart.add_argument("--split", choices=["train", "dev", "test"], default="test")
    eval_instacart.add_argument("--pipeline", action="append", type=pipeline_name,
                                help="repeat to restrict (default: all available); dense-multilingual@N pins version N")
    eval_instacart.add_argument("--out", type=Path)
    eval_instacart.add_argument("--plot", type=Path)
    eval_instacart.add_argument("--runs", type=Path, help="also write TREC run files into this folder")
    eval_instacart.set_defaults(run=_eval_instacart)
    eval_qu = eval_commands.add_parser(
        "query-understanding", help="extraction, spelling and query->category accuracy", add_help=False
    )
    eval_qu.add_argument("rest", nargs=argparse.REMAINDER)
    eval_qu.set_defaults(run=_eval_query_understanding)
    eval_category = eval_commands.add_parser(
        "query-category", help="the query -> category vote search uses, against majority and BM25-vote baselines",
        add_help=False,
    )
    eval_category.add_argument("rest", nargs=argparse.REMAINDER)
    eval_category.set_defaults(run=_eval_query_category)
    eval_rec = eval_commands.add_parser(
        "rec", help="next-item recommendation on Amazon Beauty/Sports/Toys: ours, RecBole SASRec, popularity",
        add_help=False,
    )
    eval_rec.add_argument("rest", nargs=argparse.REMAINDER)
    eval_rec.set_defaults(run=_eval_rec)
    eval_ctr = eval_commands.add_parser(
        "ctr", help="the trained CTR/CVR head vs logistic regression and LightGBM on a later window (AUC, log-loss)",
        add_help=False,
    )
    eval_ctr.add_argument("rest", nargs=argparse.REMAINDER)
    eval_ctr.set_defaults(run=_eval_ctr)
    eval_offpolicy = eval_commands.add_parser(
        "offpolicy", help="a ranking's CTR and CVR estimated from explored searches in the logs (IPS, SNIPS, PBM)",
        add_help=False,
    )
    eval_offpolicy.add_argument("rest", nargs=argparse.REMAINDER)
    eval_offpolicy.set_defaults(run=_eval_offpolicy)
    tune_fusion = eval_commands.add_parser("tune-fusion", help="tune lexical/dense fusion on the Instacart dev split")
    add_benchmark_arguments(tune_fusion)
    tune_fusion.set_defaults(run=_tune_fusion)

    train = commands.add_parser("train", help="train models on the shop's data and export them")
    train_commands = train.add_subparsers(dest="model", required=True)
    train_encoder = train_commands.add_parser(
        "encoder", help="fine-tune the multilingual text encoder on catalogue-derived pairs", add_help=False
    )
    train_encoder.add_argument("rest", nargs=argparse.REMAINDER)
    train_encoder.set_defaults(run=_train_encoder)
    train_rec = train_commands.add_parser(
        "rec", help="train the sequential recommender on purchase sequences", add_help=False
    )
    train_rec.add_argument("rest", nargs=argparse.REMAINDER)
    train_rec.set_defaults(run=_train_rec)
    train_ranker = train_commands.add_parser(
        "ranker", help="train the relevance ranker (LambdaMART) on relevance judgments", add_help=False
    )
    train_ranker.add_argument("rest", nargs=argparse.REMAINDER)
    train_ranker.set_defaults(run=_train_ranker)
    train_ctr = train_commands.add_parser(
        "ctr", help="train the CTR/CVR head (ESMM + position bias) on logged impressions", add_help=False
    )
    train_ctr.add_argument("rest", nargs=argparse.REMAINDER)
    train_ctr.set_defaults(run=_train_ctr)

    report = commands.add_parser("report", help="reports on logged traffic")
    report_commands = report.add_subparsers(dest="report", required=True)
    from training.experiments.experiment_report import add_arguments as add_report_arguments

    report_experiment = report_commands.add_parser(
        "experiment", help="CTR, add-to-cart rate, CVR and revenue per search per arm, with 95% intervals and lifts"
    )
    add_report_arguments(report_experiment)
    report_experiment.set_defaults(run=_report_experiment)

    simulate = commands.add_parser(
        "simulate", help="SIMULATED A/B test: Instacart-grounded shoppers search and buy through the real stack",
        description="A simulated A/B test (see training/experiments/simulator.py for the shopper model and its assumptions).",
    )
    from training.experiments.learning_comparison import add_arguments as add_simulate_arguments

    add_simulate_arguments(simulate)
    simulate.set_defaults(run=_simulate)

    export = commands.add_parser("export", help="export the models to ONNX in model_repository/", add_help=False)
    export.add_argument("rest", nargs=argparse.REMAINDER)
    export.set_defaults(run=_export)
    quantize = commands.add_parser(
        "quantize", help="write an int8 version of a text encoder for CPU serving (~2x faster)", add_help=False
    )
    quantize.add_argument("rest", nargs=argparse.REMAINDER)
    quantize.set_defaults(run=_quantize)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # Commands that hand their options to another module's parser (export, train, triton up,
    # eval query-understanding) take everything after their name, "--help" included; argparse's
    # REMAINDER alone drops a first argument that starts with "-".
    args, unknown = parser.parse_known_args(argv)
    if hasattr(args, "rest"):
        # Leading options land in `unknown`, REMAINDER takes over from the first other token.
        args.rest = [*unknown, *(args.rest or [])]
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    result = args.run(args)
    if asyncio.iscoroutine(result):
        import grpc

        try:
            return asyncio.run(_until_stopped(result))
        except grpc.aio.AioRpcError as error:
            print(f"{error.code().name}: {error.details()}", file=sys.stderr)
            return 1
        except asyncio.CancelledError:
            print("stopped", file=sys.stderr)
            return 130
    return result


async def _until_stopped(command):
    """Runs an async command that Ctrl-C (SIGINT) or `kill` (SIGTERM, what Kubernetes and a
    shutting-down machine send) cancels, so its `finally` blocks stop what it started (services,
    PostgreSQL) instead of leaving them running. Set explicitly: a command started in the
    background by a script inherits SIGINT ignored, and SIGTERM would otherwise end Python at
    once. A command may install its own handlers for these (`up` stops at its end instead).
    Signals reach only the main thread: `main` called from another thread (tests, an embedding
    program) runs the command without handlers."""
    if threading.current_thread() is not threading.main_thread():
        return await command
    task = asyncio.ensure_future(command)
    loop = asyncio.get_running_loop()
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(stop_signal, task.cancel)
    try:
        return await task
    finally:
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(stop_signal)

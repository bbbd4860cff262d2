"""`shelfwise up`: the whole system on this machine (embedded PostgreSQL, the five services,
optionally a local Triton) with the demo catalogue or yours, a few sample searches and
recommendations printed, then running until Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from pathlib import Path

from services.cli.commands.client import recommend, search
from services.cli.commands.client import register as register_client
from services.cli.library_noise import quiet_library_noise
from services.local.catalog_import import demo_catalog_path

DEMO_QUERIES = (
    "something to drink with steak",
    "red runing shoes under $50",
    "noise cancelling headphones",
    "绿茶",
    "gift for a coffee lover",
)


def register(commands) -> None:
    up = commands.add_parser("up", help="start PostgreSQL and the five services locally with the demo catalogue")
    up.add_argument("--data-dir", default=".shelfwise", help="where PostgreSQL data and service logs go")
    up.add_argument("--model-repository", default="model_repository")
    up.add_argument("--catalog", help="catalogue file to import instead of the demo catalogue")
    up.add_argument("--query", dest="queries", action="append", help="sample query to run (repeatable)")
    up.add_argument("--exit", action="store_true", help="stop after printing the sample results")
    up.add_argument("--triton", action="store_true", help="serve the models from a local Triton server")
    up.add_argument("--triton-env-dir", default=".venv-triton", help="virtual environment of the local Triton")
    up.set_defaults(run=run_up)


async def run_up(args) -> int:
    quiet_library_noise()
    from services.local.catalog_import import read_catalog_file
    from services.local.stack import LocalStack, StackSettings
    from services.local.supervision import Supervisor
    from training.encoders.export import main as export_models

    started = time.monotonic()
    repository = Path(args.model_repository).resolve()
    # Skips models that are up to date, and trains nothing: a first start needs no training (the
    # relevance ranker comes from `shelfwise train ranker` or `shelfwise export`). In a thread:
    # the export runs event loops of its own.
    await asyncio.to_thread(export_models, ["--model-repository", str(repository), "--no-training"])
    data_dir = Path(args.data_dir).resolve()
    catalog = Path(args.catalog) if args.catalog else demo_catalog_path()
    try:
        products = read_catalog_file(catalog)  # a bad catalogue stops here, before anything starts
    except ValueError as error:
        print(error, file=sys.stderr)
        return 1
    stack = LocalStack(StackSettings(
        state_dir=data_dir, model_repository=repository, free_ports=False,
        triton_env_dir=Path(args.triton_env_dir) if args.triton else None,
    ))
    stop = asyncio.Event()
    supervising: asyncio.Task | None = None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stack.start()
        if stack.triton is not None:
            print(f"Triton serving {', '.join(stack.triton_models)} at {stack.triton.grpc_url}", flush=True)
        print(f"PostgreSQL and all five services SERVING ({time.monotonic() - started:.1f}s); "
              f"logs in {stack.log_dir}", flush=True)
        inserted, updated = await stack.sync_catalog(products)
        print(f"catalogue {catalog.name}: {inserted} new, {updated} updated products; query understanding reads "
              f"it ({time.monotonic() - started:.1f}s)", flush=True)
        gateway = stack.address("gateway")
        for query in args.queries or DEMO_QUERIES:
            await search(client_arguments(
                "search", query, "--address", gateway, "--page-size", "5", "--user-id", "demo-user", "--session-id", "demo"
            ))
        await demo_recommendations(gateway)
        if args.exit:
            return 0
        print(f"\nShelfwise is running: gateway at {gateway}. Try `shelfwise search \"red wine\"`. Ctrl-C stops.", flush=True)
        # A service that dies is reported and started again (services/local/supervision.py).
        supervisor = Supervisor(stack)
        supervising = asyncio.create_task(supervisor.run())
        await stop.wait()
        if supervisor.restarts:
            print(f"restarts while running: {supervisor.restarts}", flush=True)
        return 0
    finally:
        if supervising is not None:
            supervising.cancel()
            await asyncio.gather(supervising, return_exceptions=True)
        codes = await stack.stop()
        unclean = {service: code for service, code in codes.items() if code != 0}
        print(f"stopped: {'all services exited cleanly' if not unclean else f'unclean exits {unclean}'}", flush=True)


async def demo_recommendations(gateway: str) -> None:
    """Recommend on the demo catalogue: what completes a cart, and a first-time shopper (cold
    start: popular products, or the session's clicks once there are some)."""
    common = ("--address", gateway, "--page-size", "5")
    await recommend(client_arguments("recommend", *common, "--cart", "sku-redwine-0001"))
    await recommend(client_arguments("recommend", *common, "--for-user", "--user-id", f"new-shopper-{uuid.uuid4().hex[:6]}"))


def client_arguments(*argv: str) -> argparse.Namespace:
    """A client command's arguments as `shelfwise` parses them, every option's default included,
    so the demo's calls keep up with the commands' options."""
    parser = argparse.ArgumentParser(prog="shelfwise")
    register_client(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(list(argv))

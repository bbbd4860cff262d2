"""`shelfwise simulate`: an offline A/B test with simulated shoppers grounded in real Instacart
data, driving the real gRPC stack (gateway.Search, then gateway.Track).

THIS IS A SIMULATION. Its figures measure the system against a model of shoppers, not real
shoppers; they are only as right as the assumptions below (``ASSUMPTIONS``, printed with every
report).

What runs: the five services start on free ports over an embedded PostgreSQL (the machinery
of ``shelfwise eval search``'s ``full`` pipeline: ``LocalSystem``, ``EmbeddedPostgres``,
``import_products``), with an experiments file whose arms are the ``--arms`` presets
(``ARM_PRESETS``). The catalogue is Instacart's product list (as ``training.search.instacart`` builds
it: title = product name, category = department) with a synthetic price per product. Each
simulated shopper:

1. takes a real basket (an order of ``order_products__prior.csv``) and forms one to four
   intents from it, each either one product of the basket or the aisle of one (a shopper
   wanting "yogurt" rather than one yogurt);
2. types a query for each intent: for an aisle, the aisle's name or our written description of
   it (``training/search/benchmarks/instacart_aisle_queries.tsv``), in English or Chinese (the
   ``--language-mix``); for a product, a fragment of its name (English; a Chinese shopper asks
   for the product's aisle in Chinese); English queries get one keyboard typo with probability
   ``TYPO_RATE`` (``training.search.instacart.one_typo``);
3. searches through the gateway (page of 10) and reacts to the page with a position-based
   examination model: position k is examined with probability ``EXAMINATION[k]``, an examined
   result is clicked with the attractiveness of its match to the intent (same product > a product
   of the shopper's real basket > same aisle > same department > none), a click becomes an
   add-to-cart and an add-to-cart a purchase with probabilities that depend on the match too;
   after a purchase the shopper stops reading with probability ``STOP_AFTER_PURCHASE``;
4. reports what they did through gateway.Track (click, add-to-cart, purchase with its value).

Reproducibility: every shopper's choices come from a random stream seeded by (``--seed``,
period, shopper), so the shoppers, their intents, queries and reactions to a given page are the
same on every run. The pages themselves can differ slightly between runs with shoppers in
flight concurrently, because ranking's popularity feature learns from the events as they
arrive; ``--concurrency 1`` on a fresh ``--state-dir`` makes a run repeatable end to end.
Request and event ids are deterministic too, so one ``--state-dir`` holds an experiment name
once: a second run of the same name is refused (its events would be dropped as duplicates).

Periods: a warm-up (``--warmup-shoppers``, experiment ``<name>-warmup``) logs traffic to train
the CTR head on; the test period (``--shoppers``, experiment ``<name>``) is the A/B test. They
draw their baskets from disjoint halves of the orders (by a hash of the order id), so the head
is never trained on the test period's shoppers or events. Train between two runs, since the
ranking service loads the latest ``ctr_head`` at start-up::

    shelfwise simulate --warmup-shoppers 2000 --shoppers 0 --experiment sim   # prints the window
    shelfwise train ctr --since <start> --until <end>                        # the new ctr_head
    shelfwise simulate --shoppers 2000 --arms bm25,full --experiment sim      # the A/B test
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from training.experiments.arms import ARM_PRESETS, RANKER_SETTING, experiment_config
from training.experiments.shop_log import logged_searches, train_ctr_head
from training.experiments.shoppers import (
    ASSUMPTIONS,
    DEFAULT_LANGUAGE_MIX,
    INTENT_AISLES,
    PAGE_SIZE,
    STOP_AFTER_PURCHASE,
    Audience,
    Shopper,
    World,
    load_world,
    parse_language_mix,
    plan_shoppers,
    react,
)

# --------------------------------------------------------------------------- driving the stack


@dataclass
class PeriodStats:
    searches: int = 0
    failed_searches: int = 0
    failed_tracks: int = 0
    events: int = 0
    degraded: dict[str, int] = field(default_factory=dict)
    arms: dict[str, int] = field(default_factory=dict)
    # Searches that showed nothing (logged as impressions without products, so the report read
    # from the database counts them as searches with nothing shown).
    empty: int = 0
    # Arm label -> the rankers that served it ("ctr_head/2", "retrieval-order", ...).
    rankers: dict[str, set] = field(default_factory=dict)


async def run_shoppers(gateway_address: str, shoppers: Sequence[Shopper], world: World, concurrency: int = 4,
                       progress: bool = True, stop_after_purchase: float = STOP_AFTER_PURCHASE) -> PeriodStats:
    """Every shopper's searches through gateway.Search, then their actions through gateway.Track."""
    import grpc
    from shelfwise.events.v1 import events_pb2
    from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc
    from tqdm import tqdm

    from services.common.channels import create_channel

    types = {
        "click": events_pb2.INTERACTION_TYPE_CLICK,
        "add_to_cart": events_pb2.INTERACTION_TYPE_ADD_TO_CART,
        "purchase": events_pb2.INTERACTION_TYPE_PURCHASE,
    }
    stats = PeriodStats()
    limit = asyncio.Semaphore(concurrency)
    async with create_channel(gateway_address, retry_refused=True) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        bar = tqdm(total=len(shoppers), unit="shopper", desc="simulate", disable=not progress, file=sys.stderr)

        async def shop(shopper: Shopper) -> None:
            rng = random.Random(shopper.seed ^ 0x5EED)  # reactions: a stream of their own
            async with limit:
                for number, search in enumerate(shopper.searches):
                    request_id = "sim-" + hashlib.sha256(f"{shopper.user_id}:{number}".encode()).hexdigest()[:32]
                    try:
                        response = await stub.Search(
                            gateway_pb2.SearchRequest(
                                query=search.query, page_size=PAGE_SIZE, user_id=shopper.user_id,
                                session_id=f"{shopper.user_id}-s", request_id=request_id,
                            ),
                            timeout=30,
                        )
                    except grpc.aio.AioRpcError as error:
                        stats.failed_searches += 1
                        print(f"search {search.query!r} failed: {error.code().name} {error.details()}", file=sys.stderr)
                        continue
                    stats.searches += 1
                    label = response.model_version.rpartition("experiment=")[2]
                    stats.arms[label] = stats.arms.get(label, 0) + 1
                    stats.rankers.setdefault(label, set()).update(RANKER_SETTING.findall(response.model_version))
                    if not response.results:
                        stats.empty += 1
                    for stage in response.degraded_stages:
                        stats.degraded[stage] = stats.degraded.get(stage, 0) + 1
                    actions = react(search.intent, [r.product.id for r in response.results], world, rng,
                                    stop_after_purchase)
                    if not actions:
                        continue
                    interactions = []
                    for n, action in enumerate(actions):
                        interaction = events_pb2.Interaction(
                            event_id=f"{response.request_id}-{n}-{action.kind}", type=types[action.kind],
                            request_id=response.request_id, product_id=action.product_id, position=action.position,
                            user_id=shopper.user_id, session_id=f"{shopper.user_id}-s",
                            quantity=action.quantity, value=action.value,
                        )
                        interaction.occurred_at.GetCurrentTime()
                        interactions.append(interaction)
                    try:
                        await stub.Track(gateway_pb2.TrackRequest(interactions=interactions), timeout=30)
                        stats.events += len(interactions)
                    except grpc.aio.AioRpcError as error:
                        stats.failed_tracks += 1
                        print(f"track of {response.request_id} failed: {error.code().name} {error.details()}",
                              file=sys.stderr)
            bar.update(1)

        try:
            await asyncio.gather(*(shop(shopper) for shopper in shoppers))
        finally:
            bar.close()
    return stats


# A simulation measures what shoppers get, not latency: on a small shared machine the default
# stage deadlines would turn a slow moment into a degraded or failed search, which is noise here.
SIMULATION_DEADLINES = {
    "SHELFWISE_DEADLINE_QUERY_UNDERSTANDING_SECONDS": "5",
    "SHELFWISE_DEADLINE_RETRIEVAL_SECONDS": "15",
    "SHELFWISE_DEADLINE_RANKING_SECONDS": "10",
    "SHELFWISE_DEADLINE_EVENTS_SECONDS": "10",
}


async def warm_up(gateway_address: str, config: dict) -> None:
    """A few searches through every arm before the period starts (models load, caches fill), so
    the first shoppers do not meet a cold system. Their impressions fall before the period's
    window and outside its report."""
    from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    from services.common.channels import create_channel
    from services.gateway.experiments import parse_experiments

    experiments = parse_experiments(config)
    experiment = experiments.experiments[0]
    users = {}
    wanted = 1 if experiment.interleaving else len(experiment.arms)  # interleaved: every search runs both
    for n in range(10_000):
        assignment = experiments.assign(f"warm-up-{n}", "", "")
        users.setdefault(assignment.label, f"warm-up-{n}")
        if len(users) == wanted:
            break
    async with create_channel(gateway_address, retry_refused=True) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        for user in users.values():
            for query in ("milk", "新鲜水果"):
                await stub.Search(gateway_pb2.SearchRequest(query=query, page_size=PAGE_SIZE, user_id=user), timeout=60)


def simulation_header(args, periods: dict) -> str:
    lines = ["=" * 100, "SIMULATION: simulated shoppers on the real Shelfwise stack (not real traffic)", "=" * 100]
    lines.append(f"arms: {args.arms}  seed: {args.seed}  language mix: {args.language_mix}  intents in "
                 f"{args.intent_aisles} aisles  catalogue: Instacart products with synthetic prices")
    for period, info in periods.items():
        stats = info["stats"]
        degraded = ", ".join(f"{k} x{v}" for k, v in sorted(stats.degraded.items())) or "none"
        lines.append(f"{period}: experiment {info['experiment']!r}, {info['shoppers']} shoppers, {stats.searches} "
                     f"searches ({stats.failed_searches} failed), {stats.events} events ({stats.failed_tracks} Track calls failed), window "
                     f"{info['since']} .. {info['until']}; degraded responses: {degraded}")
        rankers = "; ".join(f"{label}: {', '.join(sorted(names))}" for label, names in sorted(stats.rankers.items()))
        lines.append(f"  rankers served: {rankers}")
        if info.get("ctr_head_trained"):
            lines.append(f"  CTR head trained on this period's events: {info['ctr_head_trained']}")
    lines.append("assumptions:")
    lines += [f"  - {assumption}" for assumption in ASSUMPTIONS]
    return "\n".join(lines)


# --------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arms", default="bm25,full", help=f"comma-separated arms, the first is the control "
                        f"(presets: {', '.join(ARM_PRESETS)}; full@N pins ctr_head version N, e.g. full@1,full@2)")
    parser.add_argument("--shoppers", type=int, default=500, help="test-period shoppers (0 = warm-up only)")
    parser.add_argument("--warmup-shoppers", type=int, default=0,
                        help="warm-up shoppers first, as experiment NAME-warmup (train the CTR head on them "
                             "between runs; see the module docs)")
    parser.add_argument("--interleaving", action="store_true",
                        help="test period: team-draft interleave the two arms on every search instead of splitting "
                             "shoppers (the report gives each arm's share of wins)")
    parser.add_argument("--train-ctr", action="store_true",
                        help="after the warm-up, train the CTR head on its events (shelfwise train ctr, into the "
                             "model repository) so the test period's full arm serves it")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--experiment", default="sim", help="experiment name of the test period")
    parser.add_argument("--language-mix", default=DEFAULT_LANGUAGE_MIX, help="e.g. en:0.7,zh:0.3")
    parser.add_argument("--intent-aisles", choices=INTENT_AISLES, default="test",
                        help="aisles shoppers want: the benchmark's held-out test-split aisles (default), or all")
    parser.add_argument("--concurrency", type=int, default=4, help="shoppers in flight at once")
    parser.add_argument("--data-dir", type=Path, help="folder holding instacart/ (default: SHELFWISE_DATA_DIR)")
    parser.add_argument("--state-dir", type=Path, default=Path(".shelfwise") / "simulate",
                        help="PostgreSQL data (events are kept between runs), logs and the experiments file")
    parser.add_argument("--model-repository", type=Path, help="default: SHELFWISE_MODEL_REPOSITORY")
    parser.add_argument("--samples", type=int, default=2000, help="bootstrap resamples of the report")
    parser.add_argument("--out", type=Path, help="write the report (and the simulation settings) as JSON")
    parser.add_argument("--plot", type=Path, help="write a PNG of the per-arm metrics")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--stop-after-purchase", type=float, default=STOP_AFTER_PURCHASE,
                        help="shopper model: probability of reading no further after a purchase (0 makes clicks "
                             "depend on the product and its position only, the off-policy estimators' assumption)")


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class SimulatedShop:
    """Where a simulated shop runs: its database, its model repository and its state folder
    (the experiments file, the services' logs)."""

    url: str
    repository: Path
    state: Path


@dataclass(frozen=True)
class PeriodOptions:
    """How a period runs: settings added to the services' environment, shoppers at once,
    progress output, and the shopper model's stop-after-purchase probability."""

    environ: dict | None = None
    concurrency: int = 4
    quiet: bool = False
    stop_after_purchase: float = STOP_AFTER_PURCHASE


async def run_period(
    shop: SimulatedShop, config: dict, shoppers: Sequence[Shopper], world: World,
    options: PeriodOptions = PeriodOptions(),
) -> tuple[PeriodStats, datetime, datetime]:
    """One period: the five services started with `config` as the experiments file (and
    `environ` added to their settings), the catalogue brought up to date, the shoppers run, the
    services stopped. Returns the stats and the period's window [since, until)."""
    from services.local.stack import LocalStack, StackSettings

    experiments_file = shop.state / "experiments.json"
    experiments_file.write_text(json.dumps(config, indent=2))
    stack = LocalStack(StackSettings(
        state_dir=shop.state, model_repository=shop.repository, database_url=shop.url,
        environ={"SHELFWISE_EXPERIMENTS": str(experiments_file), "SHELFWISE_VOCABULARY_REFRESH_SECONDS": "2",
                 "SHELFWISE_POPULARITY_REFRESH_SECONDS": "5", **SIMULATION_DEADLINES, **(options.environ or {})},
    ))
    try:
        await stack.start(timeout=600)
        started = time.monotonic()
        # Returns once query understanding reads the catalogue as it now is.
        inserted, updated = await stack.sync_catalog(world.catalog(), progress=not options.quiet)
        if inserted or updated:
            print(f"catalogue: {inserted} new, {updated} updated products in {time.monotonic() - started:.0f}s",
                  file=sys.stderr)
        await warm_up(stack.address("gateway"), config)
        since = _now()
        stats = await run_shoppers(stack.address("gateway"), shoppers, world, options.concurrency, not options.quiet,
                                   options.stop_after_purchase)
    finally:
        await stack.stop()  # the gateway first: its last impressions reach events
    return stats, since, _now()


async def simulate(args) -> int:
    from services.local.postgres import EmbeddedPostgres
    from services.common.config import model_repository, shared_data_dir
    from training.experiments.experiment_report import analyse, format_report, plot, read_searches

    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    if args.shoppers < 0 or args.warmup_shoppers < 0 or args.shoppers + args.warmup_shoppers == 0:
        print("--shoppers / --warmup-shoppers: simulate at least one shopper", file=sys.stderr)
        return 2
    try:
        language_mix = parse_language_mix(args.language_mix)
        config = experiment_config(args.experiment, arms, interleaving=args.interleaving)
        # The warm-up logs traffic for training: each shopper on one arm's ranking, never merged.
        warmup_config = experiment_config(f"{args.experiment}-warmup", arms)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    world = load_world(args.data_dir or shared_data_dir())
    plans = {
        "warm-up": (f"{args.experiment}-warmup", plan_shoppers(
            world, args.warmup_shoppers, args.seed, "warmup",
            Audience(language_mix, args.intent_aisles, f"{args.experiment}-warmup"),
        )),
        "test": (args.experiment, plan_shoppers(
            world, args.shoppers, args.seed, "test", Audience(language_mix, args.intent_aisles, args.experiment)
        )),
    }
    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    # Each period is its own experiment holding all traffic while it runs (its own system run),
    # so the report of one never mixes in the other's impressions.
    repository = Path(args.model_repository or model_repository()).resolve()
    postgres = EmbeddedPostgres(state / "postgres")
    url = postgres.start()
    periods = {}
    try:
        for name, shoppers in plans.values():
            # Request and event ids are deterministic: a second run of the same experiment into
            # the same database would be stored as duplicates (dropped) and report nothing new.
            if shoppers and await logged_searches(url, name):
                print(f"--experiment: {name!r} already has searches in {state / 'postgres'}; choose another "
                      "experiment name or a fresh --state-dir", file=sys.stderr)
                return 2
        for period, (name, shoppers) in plans.items():
            if not shoppers:
                continue
            stats, since, until = await run_period(
                SimulatedShop(url, repository, state), warmup_config if period == "warm-up" else config, shoppers,
                world, PeriodOptions(concurrency=args.concurrency, quiet=args.quiet,
                                     stop_after_purchase=args.stop_after_purchase),
            )
            periods[period] = {"experiment": name, "shoppers": len(shoppers), "stats": stats,
                               "since": since.isoformat(), "until": until.isoformat()}
            if period == "warm-up" and args.train_ctr:
                periods[period]["ctr_head_trained"] = await train_ctr_head(url, since, until, repository)
        header = simulation_header(args, periods)
        print(header)
        result = {"simulation": True, "assumptions": list(ASSUMPTIONS), "arms": arms, "seed": args.seed,
                  "language_mix": language_mix, "periods": {
                      p: {k: v for k, v in info.items() if k != "stats"}
                      | {"searches": info["stats"].searches,
                         "rankers": {label: sorted(names) for label, names in info["stats"].rankers.items()}}
                      for p, info in periods.items()}}
        if "warm-up" in periods and not args.train_ctr:
            info = periods["warm-up"]
            print(f"\nwarm-up logged (PostgreSQL data in {state / 'postgres'}): train the CTR head on the window\n"
                  f"  --since {info['since']} --until {info['until']}\n"
                  "before the test period, or run both periods with --train-ctr, which does it in between.")
        if "test" in periods:
            info = periods["test"]
            records = await read_searches(url, info["experiment"], datetime.fromisoformat(info["since"]),
                                          datetime.fromisoformat(info["until"]))
            print(f"\n{periods['test']['stats'].empty} searches showed no results; they count as searches "
                  "with nothing shown")
            report = analyse(records, info["experiment"], config["experiments"][0]["control"], args.samples)
            print("\n" + format_report(report))
            print("\n(SIMULATION: see the assumptions above)")
            result["report"] = report
            if args.plot:
                plot(report, args.plot, title=f"SIMULATION {info['experiment']}: {len(plans['test'][1])} simulated "
                                              f"shoppers (95% bootstrap over users)")
                print(f"plot: {args.plot}")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2, default=float, ensure_ascii=False) + "\n", encoding="utf-8")
            print(f"report: {args.out}")
        return 0
    finally:
        postgres.stop()

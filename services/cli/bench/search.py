"""`shelfwise bench search`: an open-loop load generator for Search, full pipeline against a
BM25-only reference on the same services, in one run.

Open loop. Requests are scheduled at fixed arrival times (``rate`` per second for ``duration``
seconds) and each one is sent at its time whether or not the earlier ones have answered, so a
slow system faces the same arrival rate a shop's traffic would give it. Latency is measured from
the *scheduled* send time, not from when the client got round to sending: if the client (or
the machine) falls behind, that delay counts, so coordinated omission cannot hide a stall. Each
call has a deadline; at most ``max_in_flight`` calls are outstanding, and an arrival beyond that
is counted as an error (``CLIENT_OVERFLOW``) rather than queued, since queuing it would quietly
turn the test back into a closed loop. The report gives, per configuration: achieved QPS (OK
answers per second of the phase), p50/p95/p99/max latency of the OK answers, errors per gRPC
status code with their p99 latency (how fast a shed request learns it was shed), the gateway's
``degraded_stages`` counts, the latency of health checks sent to the gateway every 100 ms
beside the load (what a load balancer's probe sees), and how late the client itself sent (its
own lag, to tell a saturated client from a saturated system).

With ``--only full,facets`` the full pipeline runs twice, the second time asking every Search for
four facets (category, brand, price buckets, attributes.color: `BENCH_FACETS`), so the cost of
facets is the difference between two columns of one run.

The BM25-only reference. The gateway already serves experiment arms with their own policies
(`services.gateway.experiments`): an arm can use lexical retrieval only, keep retrieval's order
instead of ranking with the model, and skip query understanding. The bench starts the gateway
with a two-arm experiment (`BENCH_EXPERIMENT`: ``full`` = the default policies, ``bm25`` =
lexical, retrieval order, no query understanding) and puts each request in the arm it measures
by its ``request_id``: requests carry no user or session id, so the gateway assigns them by
request id, a pure SHA-256 function the bench evaluates itself (`request_id_for_arm`), and every
answer's ``model_version`` names the arm that served it, which the bench checks. So both
configurations run through the same gateway, retrieval, ranking and events processes and the
same indexes: the only difference is the per-request policy. The alternative, a second gateway
with other settings, would add a process competing for the two cores and has no setting for
these policies anyway. The two phases run one after the other (full first), each at the full
rate, so the figures for each are the system's at that rate, not at half of it. The ``bm25``
arm still calls ranking (with the retrieval-order policy, so no model runs) and logs
impressions: it is the same services configured down, not a different system. Without query
understanding the ``bm25`` arm also reads no price from the text, so "under $50" is not a
filter there.

Without ``--address`` the bench starts its own system (embedded PostgreSQL, the five services
as processes on free ports) and imports a synthetic catalogue (`services.local.synthetic_catalog`,
``--items`` products; the report says it is synthetic). The index build (import through
retrieval's UpsertProducts: embedding, PostgreSQL, BM25 and ANN updates) is timed on its own,
before query understanding starts and reads the catalogue vocabulary once (also timed). The
per-service CPU time of each phase is read from /proc, and ``--profile DIR`` runs every service
under cProfile. Only loopback addresses are accepted: this is a load generator.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

from services.cli.bench.open_loop import (
    OK, Outcome, Summary, arrival_offsets, probe_health, run_open_loop, summarize,
)
from services.cli.bench.own_system import OwnSystem, breakers_opened, peak_rss_mib, start_own_system
from services.cli.bench.search_report import BM25, FACETS, FULL, LABELS, report
from services.gateway.experiments import parse_experiments

EXPERIMENT_NAME = "bench"
CONFIGURATIONS = (FULL, BM25)
# What each configuration measures: an experiment arm, and whether the request asks for facets
# (the full pipeline asking for what a shop's result page shows beside the results).
ARM_OF = {FULL: FULL, BM25: BM25, FACETS: FULL}
BENCH_FACETS = ("category", "brand", "price", "attributes.color")
BENCH_EXPERIMENT = {
    "experiments": [{
        "name": EXPERIMENT_NAME,
        "control": FULL,
        "arms": [
            {"name": FULL},
            {"name": BM25, "retrieval": "lexical", "ranking": "retrieval", "query_understanding": False},
        ],
    }]
}
# A health check on the gateway every so often during each phase, as a load balancer would.
HEALTH_PROBE_SECONDS = 0.1
WRONG_ARM = "WRONG_ARM"  # answered by another arm than the one asked for (gateway misconfigured)


class NotLoopback(ValueError):
    pass


def check_loopback(address: str) -> str:
    """The address if its host is a loopback one (127.0.0.0/8, ::1, localhost); else NotLoopback."""
    host = address.rsplit(":", 1)[0] if ":" in address else address
    host = host.strip("[]")
    if host == "localhost":
        return address
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise NotLoopback(
            f"--address: bench search only targets loopback addresses (127.0.0.1, ::1, localhost), got {address!r}; "
            "it generates load and must not be pointed at a shared or production gateway"
        )
    return address


# --------------------------------------------------------------------------- requests


def request_id_for_arm(arm: str, prefix: str, number: int, experiments=None) -> str:
    """A request id that the bench experiment assigns to `arm` (the gateway assigns requests
    without user or session id by their request id, with the same function)."""
    experiments = experiments or parse_experiments(BENCH_EXPERIMENT)
    for attempt in range(1000):
        request_id = f"{prefix}-{number}-{attempt}"
        assignment = experiments.assign("", "", request_id)
        if assignment is not None and assignment.arm is not None and assignment.arm.name == arm:
            return request_id
    raise RuntimeError(f"no request id for arm {arm!r} in 1000 tries")  # p = 2**-1000


def served_arm(model_version: str) -> str:
    """The arm named in a Search answer's model_version (``...,experiment=bench/<arm>``), or ""."""
    marker = f"experiment={EXPERIMENT_NAME}/"
    return model_version.rpartition(marker)[2] if marker in model_version else ""


def search_caller(stub, queries: Sequence[str], configuration: str, deadline: float, page_size: int = 10, offset: int = 0):
    """call(n) for `run_open_loop`: Search with query `offset + n` of the stream (cycled) in the
    configuration's arm, with BENCH_FACETS for the FACETS configuration."""
    import grpc
    from shelfwise.common.v1 import common_pb2
    from shelfwise.gateway.v1 import gateway_pb2

    arm = ARM_OF[configuration]
    prefix = f"bench-{uuid.uuid4().hex[:8]}-{arm}"
    experiments = parse_experiments(BENCH_EXPERIMENT)
    facets = [common_pb2.FacetRequest(field=field) for field in BENCH_FACETS] if configuration == FACETS else []

    async def call(number: int) -> Outcome:
        request = gateway_pb2.SearchRequest(
            query=queries[(offset + number) % len(queries)],
            page_size=page_size,
            request_id=request_id_for_arm(arm, prefix, number, experiments),
            facets=facets,
        )
        try:
            response = await stub.Search(request, timeout=deadline)
        except grpc.aio.AioRpcError as error:
            return Outcome(error.code().name)
        degraded = tuple(response.degraded_stages)
        if served_arm(response.model_version) != arm:
            return Outcome(WRONG_ARM, degraded)
        return Outcome(OK, degraded, tuple((t.stage, t.milliseconds) for t in response.timings))

    return call


async def check_arms(stub, attempts: int = 3, timeout: float = 30.0) -> dict[str, str]:
    """What the gateway answers to one probe per bench arm: the arm that served it ("" when
    the gateway has no bench experiment), or the error code of the last failed attempt. The
    first searches after a start load models, so probes get a long deadline and retries."""
    import grpc
    from shelfwise.gateway.v1 import gateway_pb2

    answers = {}
    for arm in CONFIGURATIONS:
        for attempt in range(attempts):
            request_id = request_id_for_arm(arm, f"bench-probe-{uuid.uuid4().hex[:8]}", attempt)
            try:
                response = await stub.Search(
                    gateway_pb2.SearchRequest(query="probe", page_size=1, request_id=request_id), timeout=timeout
                )
            except grpc.aio.AioRpcError as error:
                answers[arm] = error.code().name
                await asyncio.sleep(2.0)
                continue
            answers[arm] = served_arm(response.model_version)
            break
    return answers


def warmup_requests(settings: "BenchSettings") -> int:
    return len(arrival_offsets(settings.rate, settings.warmup)) if settings.warmup > 0 else 0


def repeated_share(queries: Sequence[str], first: int) -> float:
    """Share of the queries from index `first` on that already occurred earlier in the stream:
    the most a query cache could answer (shop traffic repeats its head queries)."""
    seen = set(queries[:first])
    repeats = 0
    for query in queries[first:]:
        repeats += query in seen
        seen.add(query)
    return repeats / max(1, len(queries) - first)


@dataclass
class BenchSettings:
    rate: float = 50.0
    duration: float = 60.0
    warmup: float = 5.0
    deadline: float = 2.0
    max_in_flight: int = 64
    configurations: tuple[str, ...] = CONFIGURATIONS
    # Retrieval processes of the own system; the gateway calls them round robin.
    retrieval_replicas: int = 1
    # Seed of the query stream and of the own system's synthetic catalogue.
    seed: int = 7


async def measure(
    address: str,
    queries: Sequence[str],
    settings: BenchSettings,
    cpu_seconds: Callable[[], dict[str, float]] | None = None,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
) -> tuple[list[Summary], list[str]]:
    """Runs each configuration the gateway serves (warm-up, then the measured phase) and
    returns their summaries, plus notes (e.g. an arm the gateway does not serve)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from shelfwise.gateway.v1 import gateway_pb2_grpc

    from services.common.channels import create_channel

    check_loopback(address)
    notes = []
    summaries = []
    async with create_channel(address, 16 * 1024 * 1024) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        answers = await check_arms(stub)
        for configuration in settings.configurations:
            arm = ARM_OF[configuration]
            answer = answers.get(arm, "")
            if answer != arm and answer in ("",) + CONFIGURATIONS:  # answered, by no or another arm
                notes.append(
                    f"{LABELS[configuration]} not measured: the gateway at {address} does not serve the arm "
                    f"{EXPERIMENT_NAME}/{arm}; start it with SHELFWISE_EXPERIMENTS naming a file holding "
                    f"{json.dumps(BENCH_EXPERIMENT)}"
                )
                continue
            if answer != arm:
                notes.append(f"{LABELS[configuration]}: the probes before the run failed ({answer}); measured anyway")
            # The same query stream for every configuration: warm-up first, then the measured part.
            warm = warmup_requests(settings)
            if warm:
                log(f"{LABELS[configuration]}: warm-up {settings.warmup:g}s at {settings.rate:g}/s")
                call = search_caller(stub, queries, configuration, settings.deadline)
                await run_open_loop(call, settings.rate, settings.warmup, settings.max_in_flight)
            log(f"{LABELS[configuration]}: {settings.duration:g}s at {settings.rate:g}/s")
            call = search_caller(stub, queries, configuration, settings.deadline, offset=warm)
            before = cpu_seconds() if cpu_seconds else {}
            client_before = time.process_time()
            health_ms: list[float] = []
            probing = asyncio.create_task(probe_health(lambda: health.Check(health_pb2.HealthCheckRequest(), timeout=5),
                                                       HEALTH_PROBE_SECONDS, health_ms))
            try:
                result = await run_open_loop(call, settings.rate, settings.duration, settings.max_in_flight)
            finally:
                probing.cancel()
                await asyncio.gather(probing, return_exceptions=True)
            client_seconds = time.process_time() - client_before
            after = cpu_seconds() if cpu_seconds else {}
            used = {service: after[service] - before[service] for service in after if service in before}
            summary = summarize(configuration, result, used, health_ms)
            summary.client_cpu_ms_per_request = 1000 * client_seconds / max(1, summary.scheduled)
            summaries.append(summary)
    return summaries, notes


async def bench_search(address: str | None, settings: BenchSettings, own: OwnSystem, json_path: Path | None = None) -> dict:
    """The whole command: own system (unless `address`), import, both phases, the report."""
    from services.local.synthetic_catalog import DESCRIPTION, generate_queries

    # One query per request, drawn independently from the vocabulary's templates (the head
    # queries such as "tent" recur by themselves, the long tail mostly does not).
    warm = warmup_requests(settings)
    seed = settings.seed
    query_list = generate_queries(warm + len(arrival_offsets(settings.rate, settings.duration)), seed)
    queries = (f"{len(query_list):,} synthetic queries (seed {seed}), one per request, the same stream for each "
               f"configuration; {repeated_share(query_list, warm):.0%} of the measured ones occurred earlier")
    header = [
        f"Search, open loop: {settings.rate:g} requests/s for {settings.duration:g}s per configuration "
        f"(after {settings.warmup:g}s warm-up), deadline {settings.deadline:g}s, at most {settings.max_in_flight} in flight; "
        f"latency from each request's scheduled send time; {os.cpu_count()} CPUs"
    ]
    record: dict = {"settings": asdict(settings), "cpus": os.cpu_count(), "queries": queries}
    if address is not None:
        check_loopback(address)
        header.append(f"gateway {address} (its catalogue as it is); queries: {queries}, from the {DESCRIPTION}")
        summaries, notes = await measure(address, query_list, settings)
    else:
        summaries, notes, build = await _bench_own_system(settings, own, query_list)
        record["build"] = build
        items = own.items
        header.append(
            f"catalogue: {items:,} products, {DESCRIPTION}, seed {seed}; queries: {queries}"
            + (f"; {settings.retrieval_replicas} retrieval processes, called round robin"
               if settings.retrieval_replicas > 1 else "")
        )
        reused = (f" (built by an earlier run in {own.data_dir}; this run's retrieval rebuilt the indexes from "
                  f"PostgreSQL's cached vectors in {build['retrieval_start_s']:.1f}s)") if build["reused"] else ""
        if own.random_vectors:
            header.append(
                f"RANDOM VECTORS: products and a random unit vector per text encoder written straight into PostgreSQL "
                f"in {build['import_s']:.1f}s, retrieval's indexes built from them at start-up in "
                f"{build['retrieval_start_s']:.1f}s: dense lists rank at random, and HNSW over random points may cost other than "
                f"over real embeddings (compare the configurations, not the system)"
            )
        imported = "" if own.random_vectors else (
            f"index build (import through retrieval: embedding + PostgreSQL + BM25 + ANN): {build['import_s']:.1f}s"
            + (f" over {build['import_runs']} runs (each stopped one continued by the next)" if build["import_runs"] > 1 else "")
            + f"{reused} ({items / build['import_s']:.0f} products/s); then "
        )
        header.append(
            imported + f"query understanding (reads the vocabulary), ranking and gateway SERVING in "
            f"{build['rest_start_s']:.1f}s; peak RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in build["peak_rss_mib"].items())
        )
        header.append(f"circuit breakers the gateway opened while the bench ran (from its log): {build['breakers_opened']}")
    text = report(summaries, header) + "".join(f"\nnote: {note}" for note in notes)
    record.update({"summaries": [asdict(s) for s in summaries], "notes": notes, "report": text})
    if json_path is not None:
        json_path.write_text(json.dumps(record, indent=2, default=float))
    print(text, flush=True)
    return record


async def _bench_own_system(settings: BenchSettings, own: OwnSystem, query_list: Sequence[str]):
    if own.data_dir is not None:
        own.data_dir.mkdir(parents=True, exist_ok=True)
        return await _run_own_system(own.data_dir, settings, own, query_list)
    with tempfile.TemporaryDirectory(prefix="shelfwise-bench-") as directory:
        return await _run_own_system(Path(directory), settings, own, query_list)


async def _run_own_system(folder: Path, settings: BenchSettings, own: OwnSystem, query_list: Sequence[str]):
    """Starts the system in `folder` (own_system.py), measures it, stops it."""
    stack, build = await start_own_system(folder, own, settings.seed, settings.retrieval_replicas, BENCH_EXPERIMENT)
    try:
        gateway_log = stack.log_dir / "gateway.log"
        log_start = gateway_log.stat().st_size if gateway_log.is_file() else 0
        summaries, notes = await measure(stack.address("gateway"), query_list, settings, stack.cpu_seconds)
        peaks = peak_rss_mib(process.pid for process in stack.processes.values())
        build["peak_rss_mib"] = {service: peaks.get(process.pid, float("nan")) for service, process in stack.processes.items()}
        build["breakers_opened"] = breakers_opened(gateway_log, log_start)
        return summaries, notes, build
    finally:
        await stack.stop()

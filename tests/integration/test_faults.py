"""Faults under load, with every service a real child process (as `shelfwise up` runs them),
models served by a real tritonserver and a PostgreSQL this file stops and starts.

While a background load sends Search (and Track for a click on each page) at a steady modest
rate, one fault at a time: a downstream service SIGKILLed and started again, a downstream
service frozen with SIGSTOP (real slowness: its stage hits its deadline) and resumed, retrieval
frozen (no fallback: a clear error before the caller's deadline), Triton SIGKILLed and
started again, PostgreSQL restarted. Each test shows that the gateway answers every Search
before the caller's own deadline, names what it degraded, that the circuit breaker opened
(its transition in the service's log) and closed again by itself, and that recovery needs no
restart of the other services. The PostgreSQL test counts rows: every click acknowledged to a
caller, and the impression of every page served, are stored once the database is back.

Waits are polls with generous limits, never fixed sleeps; nothing asserts latency beyond "the
answer came before the call's own gRPC deadline".
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import random
import shutil
import signal
import string
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
import pytest
from shelfwise.events.v1 import events_pb2
from shelfwise.gateway.v1 import gateway_pb2, gateway_pb2_grpc

from services.local.stack import LocalStack, StackSettings
from services.local.supervision import Supervisor
from services.local.catalog_import import demo_catalog_path, import_catalog
from services.common.channels import create_channel
from services.common.config import text_encoder_model
from services.common.inference import find_model
from tests.support.system import system_environment
from tests.support.own_postgres import OwnPostgres

# The caller's deadline on every Search and Track of the load.
CALL_DEADLINE = 15.0
# One new Search every this many seconds, each in its own task (a slow answer does not slow the rate).
LOAD_INTERVAL = 0.25
# Each matches products of the catalogue below by its words too, so a lexical-only answer (the
# text encoder down) still has results.
QUERIES = ("red wine", "running shoes", "noise cancelling headphones", "green tea")
# Every CATALOGUE_STRIDE-th product of the demo catalogue: all its categories, and a fifth of the
# products for Triton's CPU encoder to embed at start-up.
CATALOGUE_STRIDE = 5
# Stage deadlines well under CALL_DEADLINE, so a frozen stage times out and the gateway still answers in time.
STAGE_DEADLINES = {
    "SHELFWISE_DEADLINE_QUERY_UNDERSTANDING_SECONDS": "2",
    "SHELFWISE_DEADLINE_RETRIEVAL_SECONDS": "5",
    "SHELFWISE_DEADLINE_RANKING_SECONDS": "3",
    "SHELFWISE_DEADLINE_EVENTS_SECONDS": "3",
}
RECOVERY_SECONDS = 120.0


@dataclass
class Outcome:
    started: float
    request_id: str
    code: str = "PENDING"
    details: str = ""
    degraded: frozenset = frozenset()
    results: int = 0


@dataclass
class Load:
    """Search at a steady rate; a click tracked on the first result of every page served."""

    stub: gateway_pb2_grpc.GatewayServiceStub
    searches: list[Outcome] = field(default_factory=list)
    acknowledged_clicks: set[str] = field(default_factory=set)
    failed_tracks: int = 0
    _tasks: set = field(default_factory=set)
    _runner: asyncio.Task | None = None

    def start(self) -> "Load":
        self._runner = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        """Stops sending and waits for every call in flight (each ends by its own deadline)."""
        self._runner.cancel()
        await asyncio.gather(self._runner, return_exceptions=True)
        await asyncio.gather(*self._tasks)

    async def _run(self) -> None:
        for n in itertools.count():
            task = asyncio.create_task(self._search(n))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            await asyncio.sleep(LOAD_INTERVAL)

    async def _search(self, n: int) -> None:
        outcome = Outcome(time.monotonic(), f"fault-{uuid.uuid4().hex}")
        self.searches.append(outcome)
        # A word of its own in every query: retrieval caches query vectors, and a query seen
        # before would not need the text encoder (Triton) at all.
        nonce = "".join(random.choices(string.ascii_lowercase, k=8))
        request = gateway_pb2.SearchRequest(
            query=f"{QUERIES[n % len(QUERIES)]} {nonce}", page_size=5, request_id=outcome.request_id,
            user_id=f"fault-shopper-{n % 7}",  # so the shopper's history is read from events
        )
        try:
            response = await self.stub.Search(request, timeout=CALL_DEADLINE)
        except grpc.aio.AioRpcError as error:
            outcome.code, outcome.details = error.code().name, error.details() or ""
            return
        outcome.code, outcome.degraded, outcome.results = "OK", frozenset(response.degraded_stages), len(response.results)
        if response.results:
            await self._track(outcome.request_id, response.results[0].product.id)

    async def _track(self, request_id: str, product_id: str) -> None:
        click = events_pb2.Interaction(
            event_id=f"click-{request_id}", type=events_pb2.INTERACTION_TYPE_CLICK, request_id=request_id,
            product_id=product_id, position=1,
        )
        try:
            await self.stub.Track(gateway_pb2.TrackRequest(interactions=[click]), timeout=CALL_DEADLINE)
        except grpc.aio.AioRpcError:
            self.failed_tracks += 1  # not acknowledged: the caller would send it again
            return
        self.acknowledged_clicks.add(click.event_id)

    def summary(self) -> str:
        """For failure messages: what the load saw, and the last few answers."""
        codes = collections.Counter(o.code for o in self.searches)
        degraded = collections.Counter(stage for o in self.searches for stage in o.degraded)
        last = [(o.code, sorted(o.degraded), o.details[:80]) for o in self.searches[-3:]]
        return (f"searches {dict(codes)}, degraded {dict(degraded)}, clicks acknowledged "
                f"{len(self.acknowledged_clicks)}, refused {self.failed_tracks}; last {last}")

    def answered_since(self, moment: float) -> list[Outcome]:
        return [o for o in self.searches if o.started >= moment and o.code != "PENDING"]


async def until(condition, what: str, timeout: float = RECOVERY_SECONDS, load: "Load | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}" + (f"; {load.summary()}" if load else ""))
        await asyncio.sleep(0.2)


def answered_clean_since(load: Load, moment: float, stage_prefix: str, count: int = 3) -> bool:
    """The last `count` searches started after `moment` answered OK without `stage_prefix` degraded."""
    recent = load.answered_since(moment)[-count:]
    return len(recent) == count and all(
        o.code == "OK" and not any(s.startswith(stage_prefix) for s in o.degraded) for o in recent
    )


def degraded_since(load: Load, moment: float, stage: str) -> bool:
    return any(o.code == "OK" and stage in o.degraded for o in load.answered_since(moment))


def assert_every_search_answered_ok(load: Load) -> None:
    failed = [(o.code, o.details) for o in load.searches if o.code != "OK"]
    assert not failed, f"{len(failed)} of {len(load.searches)} searches failed: {failed[:5]}"
    assert all(o.results for o in load.searches)


@dataclass
class FaultySystem:
    local: LocalStack
    postgres: OwnPostgres
    triton: object

    def log(self, service: str) -> str:
        return (self.local.log_dir / f"{service}.log").read_text(errors="replace")

    def logged(self, service: str, text: str, after: int = 0) -> bool:
        return text in self.log(service)[after:]

    def log_size(self, service: str) -> int:
        return len(self.log(service))

    def signal(self, service: str, sig: signal.Signals) -> None:
        self.local.processes[service].send_signal(sig)

    async def kill(self, service: str) -> None:
        process = self.local.processes[service]
        process.kill()
        await asyncio.to_thread(process.wait)

    async def restart(self, service: str) -> None:
        await self.local.restart(service, 120)


@pytest.fixture(scope="module")
async def faulty(triton_server, model_repository):
    # Not under pytest's tmp_path (see test_events_at_scale.own_postgres): the postgres user must reach it.
    root = Path(tempfile.mkdtemp(prefix="shelfwise-faults-"))
    postgres = OwnPostgres(root)
    await asyncio.to_thread(postgres.init)
    environ = system_environment(postgres.url, model_repository, **STAGE_DEADLINES)
    environ.update({
        "SHELFWISE_INFERENCE": "triton",
        "SHELFWISE_TRITON_URL": triton_server.grpc_url,
        "SHELFWISE_TRITON_TIMEOUT_SECONDS": "2",
        "SHELFWISE_CIRCUIT_FAILURES": "3",
        "SHELFWISE_LOG_FORMAT": "text",
        # These tests read each fault's cause in the gateway's log: every warning written.
        "SHELFWISE_LOG_REPEAT_SECONDS": "0",
        # Give up on the database within the events deadline: the gateway hears UNAVAILABLE.
        "SHELFWISE_EVENTS_WRITE_RETRY_SECONDS": "2",
    })
    local = LocalStack(StackSettings(
        state_dir=root, model_repository=model_repository, environ=environ, database_url=postgres.url,
    ))
    try:
        await local.start(timeout=180)
        catalogue = root / "catalogue.jsonl"
        lines = demo_catalog_path().read_text(encoding="utf-8").splitlines(keepends=True)
        catalogue.write_text("".join(lines[::CATALOGUE_STRIDE]), encoding="utf-8")
        await import_catalog(catalogue, local.address("retrieval"), progress=False)
        yield FaultySystem(local, postgres, triton_server)
    finally:
        for process in local.processes.values():  # a failed test may leave one frozen
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
        await local.stop()
        await asyncio.to_thread(postgres.stop)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def load(faulty):
    channel = create_channel(faulty.local.address("gateway"))
    stub = gateway_pb2_grpc.GatewayServiceStub(channel)
    # Warm: the catalogue is searchable (query understanding refreshes its vocabulary on its own).
    warm = Load(stub).start()
    try:
        await until(lambda: answered_clean_since(warm, 0, ""), "the system answers searches undegraded", load=warm)
    finally:
        await warm.stop()
    running = Load(stub).start()
    yield running
    await running.stop()
    await channel.close()


async def test_killed_ranking_degrades_to_retrieval_order_until_it_is_started_again(faulty, load):
    log_from = faulty.log_size("gateway")
    await until(lambda: len(load.answered_since(0)) >= 4, "searches flow", load=load)
    killed = time.monotonic()
    await faulty.kill("ranking")
    await until(lambda: degraded_since(load, killed, "ranking"), "searches degraded to retrieval order", load=load)
    await until(lambda: faulty.logged("gateway", "circuit ranking: closed -> open", log_from), "ranking breaker opens", load=load)

    await faulty.restart("ranking")
    restarted = time.monotonic()
    await until(lambda: answered_clean_since(load, restarted, "ranking"), "ranking is used again", load=load)
    await load.stop()
    assert faulty.logged("gateway", "circuit ranking: half_open -> closed", log_from)
    # The breaker probes twice a second: under a second of degraded answers once ranking is back.
    late = [o for o in load.searches if o.started >= restarted + 1.0 and "ranking" in o.degraded]
    assert not late, f"{len(late)} searches still degraded more than 1 s after ranking was back"
    assert_every_search_answered_ok(load)
    down = [o for o in load.searches if o.started >= killed and "ranking" in o.degraded]
    assert down, "no search was answered while ranking was down"


async def test_a_killed_service_is_restarted_by_the_supervisor_and_serving_within_15_seconds(faulty, load):
    """What `shelfwise up` runs while it is up (services/local/supervision.py)."""
    lines: list[str] = []
    supervisor = Supervisor(faulty.local, report=lines.append)
    watching = asyncio.create_task(supervisor.run())
    try:
        await until(lambda: len(load.answered_since(0)) >= 4, "searches flow", load=load)
        killed = time.monotonic()
        await faulty.kill("query_understanding")
        await until(lambda: any(line.startswith("query_understanding restarted") for line in lines), "restarted", timeout=60)
        back_after = time.monotonic() - killed
        await until(lambda: answered_clean_since(load, killed + back_after, "query_understanding"), "used again", load=load)
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
    assert back_after < 15, (back_after, lines)
    assert lines[0] == "query_understanding was killed by signal 9; restarting it in 0.5s (restart 1)", lines
    assert supervisor.restarts == {"query_understanding": 1}
    await load.stop()
    assert_every_search_answered_ok(load)


async def test_frozen_query_understanding_times_out_and_search_answers_with_the_raw_query(faulty, load):
    log_from = faulty.log_size("gateway")
    await until(lambda: len(load.answered_since(0)) >= 4, "searches flow", load=load)
    frozen = time.monotonic()
    faulty.signal("query_understanding", signal.SIGSTOP)
    try:
        await until(lambda: degraded_since(load, frozen, "query_understanding"), "searches answered on the raw query", load=load)
        await until(lambda: faulty.logged("gateway", "circuit query_understanding: closed -> open", log_from),
                    "query understanding breaker opens", load=load)
        # Once open, the stage fails at once: searches keep flowing while it is frozen.
        opened = time.monotonic()
        await until(lambda: sum("query_understanding" in o.degraded for o in load.answered_since(opened)) >= 5,
                    "searches answered fast while the breaker is open", load=load)
    finally:
        faulty.signal("query_understanding", signal.SIGCONT)
    resumed = time.monotonic()
    await until(lambda: answered_clean_since(load, resumed, "query_understanding"), "query understanding used again", load=load)
    await load.stop()
    assert_every_search_answered_ok(load)
    assert faulty.logged("gateway", "query_understanding: did not answer in time", log_from)  # slow, not refused


async def test_frozen_retrieval_fails_searches_clearly_before_the_callers_deadline_and_recovers(faulty, load):
    """No fallback for retrieval: DEADLINE_EXCEEDED ("retrieval: ...") while the stage times
    out, UNAVAILABLE ("retrieval: circuit open ...") once the breaker is open, perhaps
    RESOURCE_EXHAUSTED ("retrieval: Retrieve: ... at its limit") from the burst of calls that
    queued while it was frozen, never the caller's own deadline."""
    log_from = faulty.log_size("gateway")
    await until(lambda: len(load.answered_since(0)) >= 4, "searches flow", load=load)
    frozen = time.monotonic()
    faulty.signal("retrieval", signal.SIGSTOP)
    try:
        await until(lambda: any(o.code == "UNAVAILABLE" for o in load.answered_since(frozen)),
                    "searches fail fast with UNAVAILABLE", load=load)
        assert faulty.logged("gateway", "circuit retrieval: closed -> open", log_from)
    finally:
        faulty.signal("retrieval", signal.SIGCONT)
    resumed = time.monotonic()
    await until(lambda: answered_clean_since(load, resumed, "retrieval"), "retrieval answers again", load=load)
    await load.stop()
    failed = [o for o in load.searches if o.code != "OK"]
    assert failed
    for outcome in failed:
        assert outcome.code in ("DEADLINE_EXCEEDED", "UNAVAILABLE", "RESOURCE_EXHAUSTED"), (outcome.code, outcome.details)
        assert outcome.details.startswith("retrieval"), outcome.details  # the gateway's answer, not our deadline
    fast = [o for o in failed if "circuit open" in o.details]
    assert fast, [o.details for o in failed][:5]


async def test_killed_triton_degrades_dense_retrieval_and_the_ctr_head_then_recovers_without_restarts(
    faulty, load, model_repository
):
    triton = faulty.triton
    encoder = text_encoder_model({**os.environ, **faulty.local.environ})  # as the child processes see it
    expected = {"retrieval.dense"} | ({"ranking.ctr_head"} if find_model(model_repository, "ctr_head") else set())
    logs_from = {service: faulty.log_size(service) for service in ("retrieval", "ranking")}
    await until(lambda: len(load.answered_since(0)) >= 4, "searches flow", load=load)
    killed = time.monotonic()
    os.killpg(triton._process.pid, signal.SIGKILL)  # the server and its python-backend stubs
    try:
        await until(lambda: any(o.code == "OK" and expected <= o.degraded for o in load.answered_since(killed)),
                    f"searches degraded ({', '.join(sorted(expected))})", load=load)
        await until(lambda: faulty.logged("retrieval", f"circuit triton:{encoder}: closed -> open", logs_from["retrieval"]),
                    "the text encoder's breaker opens", load=load)
        if "ranking.ctr_head" in expected:
            await until(lambda: faulty.logged("ranking", "circuit triton:ctr_head: closed -> open", logs_from["ranking"]),
                        "the CTR head's breaker opens", load=load)
    finally:
        await asyncio.to_thread(triton.stop)  # reaps the killed process
        await asyncio.to_thread(triton.start)
    restarted = time.monotonic()
    await until(lambda: answered_clean_since(load, restarted, "retrieval.dense")
                and answered_clean_since(load, restarted, "ranking.ctr_head"), "Triton used again", load=load)
    await load.stop()
    assert_every_search_answered_ok(load)
    assert faulty.logged("retrieval", f"circuit triton:{encoder}: half_open -> closed", logs_from["retrieval"])


class HealthWatch:
    """Polls a service's overall health (the readiness a load balancer reads) in the background,
    until stopped or for `lifetime` seconds at most (then `last` says so)."""

    def __init__(self, address: str, lifetime: float = 600.0) -> None:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        self.last = ""
        self._channel = create_channel(address)
        stub = health_pb2_grpc.HealthStub(self._channel)

        async def poll() -> None:
            deadline = time.monotonic() + lifetime
            while time.monotonic() < deadline:
                try:
                    answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    self.last = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
                except grpc.aio.AioRpcError as error:
                    self.last = error.code().name
                await asyncio.sleep(0.2)
            self.last = f"not watched after {lifetime:.0f}s"

        self._task = asyncio.create_task(poll())

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._channel.close()


async def test_postgres_restart_loses_no_acknowledged_click_nor_served_impression(faulty, load):
    await until(lambda: len(load.acknowledged_clicks) >= 4, "clicks acknowledged", load=load)
    events_health = HealthWatch(faulty.local.address("events"))
    try:
        stopped = time.monotonic()
        await asyncio.to_thread(faulty.postgres.stop)
        try:
            await until(lambda: load.failed_tracks > 0 and degraded_since(load, stopped, "events.history"),
                        "clicks refused and searches answered without the shopper's history", load=load)
            # Nothing can be stored: events tells readiness probes so (its liveness stays SERVING).
            await until(lambda: events_health.last == "NOT_SERVING", "events NOT_SERVING without its database", load=load)
        finally:
            await asyncio.to_thread(faulty.postgres.start)
        started = time.monotonic()
        acknowledged_before = len(load.acknowledged_clicks)
        await until(lambda: len(load.acknowledged_clicks) >= acknowledged_before + 4
                    and answered_clean_since(load, started, "events"), "clicks acknowledged again", load=load)
        await until(lambda: events_health.last == "SERVING", "events SERVING again", load=load)
    finally:
        await events_health.stop()
    await load.stop()
    assert_every_search_answered_ok(load)

    served = [o.request_id for o in load.searches if o.results]
    clicks = sorted(load.acknowledged_clicks)
    connection = await asyncpg.connect(faulty.postgres.url)
    try:
        async def stored_impressions() -> set[str]:
            rows = await connection.fetch("SELECT request_id FROM impressions WHERE request_id = ANY($1::text[])", served)
            return {row["request_id"] for row in rows}

        # Impressions whose send failed wait in the gateway's buffer and are sent again.
        deadline = time.monotonic() + RECOVERY_SECONDS
        while len(stored := await stored_impressions()) < len(served) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
        assert not set(served) - stored, f"{len(set(served) - stored)} of {len(served)} served impressions not stored"
        rows = await connection.fetch(
            "SELECT event_id, count(*) AS copies FROM interactions WHERE event_id = ANY($1::text[]) GROUP BY 1", clicks
        )
    finally:
        await connection.close()
    copies = {row["event_id"]: row["copies"] for row in rows}
    assert not set(clicks) - set(copies), f"{len(set(clicks) - set(copies))} of {len(clicks)} acknowledged clicks lost"
    assert set(copies.values()) == {1}

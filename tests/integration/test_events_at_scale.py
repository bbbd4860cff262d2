"""Events at scale, against real PostgreSQL servers: monthly partitions (and the migration of a
database that already holds events), idempotent COPY and unnest writes, StreamEvents, and no
acknowledged event lost while PostgreSQL restarts in the middle of ingestion.

Tests that stop PostgreSQL or migrate an old schema get their own server (`own_postgres`);
the others use the session's.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import grpc
import pytest
from shelfwise.events.v1 import events_pb2, events_pb2_grpc

from services.common.channels import create_channel
from services.common.database import apply_migrations, migrations
from services.events.config import EventsSettings
from services.events.model import Impression, Interaction
from services.events.partitions import months_from
from services.events.server import create_server
from services.events.store import EventStore
from tests.support.eventually import eventually
from tests.support.own_postgres import OwnPostgres
from tests.support.telemetry import metric_points

UTC = timezone.utc


@pytest.fixture
async def own_postgres():
    # Not under pytest's tmp_path: any pytest session that starts (another run on the same
    # machine) resets /tmp/pytest-of-<user> to mode 0700, locking the postgres user out.
    root = Path(tempfile.mkdtemp(prefix="shelfwise-events-pg-"))
    server = OwnPostgres(root)
    await asyncio.to_thread(server.init)
    yield server
    try:
        await asyncio.to_thread(server.stop)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def settings(url: str, **overrides) -> EventsSettings:
    return EventsSettings.from_env({"SHELFWISE_DATABASE_URL": url, **overrides})


def impression_pb(request_id: str | None = None, occurred_at: datetime | None = None, **fields) -> events_pb2.Impression:
    request_id = request_id or uuid.uuid4().hex
    message = events_pb2.Impression(
        event_id=f"impression-{request_id}",
        request_id=request_id,
        surface=events_pb2.SURFACE_SEARCH,
        product_ids=["p1", "p2"],
        **fields,
    )
    if occurred_at is not None:
        message.occurred_at.FromDatetime(occurred_at)
    return message


def click_pb(request_id: str, event_id: str | None = None) -> events_pb2.Interaction:
    return events_pb2.Interaction(
        event_id=event_id or f"click-{request_id}",
        type=events_pb2.INTERACTION_TYPE_CLICK,
        request_id=request_id,
        product_id="p2",
        position=2,
    )


def retries() -> float:
    return sum(point.value for point in metric_points("shelfwise.events.write.retries"))


async def partition_of(connection, table: str, event_id: str) -> str:
    return await connection.fetchval(f"SELECT tableoid::regclass::text FROM {table} WHERE event_id = $1", event_id)


# --- migration of a database that already holds events ------------------------------------------


async def test_old_schema_database_with_rows_migrates_to_partitions_keeping_every_row(own_postgres):
    old_months = [datetime(2024, 1, 15, 8, tzinfo=UTC), datetime(2025, 6, 30, 23, 59, tzinfo=UTC)]
    now = datetime.now(UTC).replace(microsecond=0)
    connection = await asyncpg.connect(own_postgres.url)
    try:
        await connection.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, sql in migrations():
            if version <= 5:  # the schema before partitioning
                await connection.execute(sql)
                await connection.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
        times = [*old_months, now]
        for index, occurred_at in enumerate(times):
            await connection.execute(
                "INSERT INTO impressions (event_id, request_id, occurred_at, surface, product_ids, first_position,"
                " features, interleaving_arms) VALUES ($1, $2, $3, 'search', $4, 1, $5, $6)",
                f"impression-{index}", f"request-{index}", occurred_at, ["a", "b"],
                json.dumps([{"bm25": float(index)}, {}]), ["control", "treatment"],
            )
            await connection.execute(
                "INSERT INTO interactions (event_id, type, request_id, product_id, position, occurred_at, user_id)"
                " VALUES ($1, 'click', $2, 'b', 2, $3, 'u1')",
                f"click-{index}", f"request-{index}", occurred_at + timedelta(seconds=5),
            )
        before = {
            table: await connection.fetch(f"SELECT * FROM {table} ORDER BY event_id")
            for table in ("impressions", "interactions")
        }
    finally:
        await connection.close()

    pool = await asyncpg.create_pool(own_postgres.url, min_size=1, max_size=2)
    try:
        assert await apply_migrations(pool) == [
            "0006_event_partitions.sql", "0007_event_privacy.sql", "0008_impression_propensities.sql",
            "0009_merchandising.sql"]
        for table in ("impressions", "interactions"):
            after = await pool.fetch(f"SELECT * FROM {table} ORDER BY event_id")
            old_columns = list(before[table][0].keys())
            assert [{c: row[c] for c in old_columns} for row in after] == [dict(row) for row in before[table]]
            if table == "impressions":  # columns added later: the defaults of an unexplored impression
                assert {(tuple(row["propensities"]), row["exploration_pool"]) for row in after} == {((), "[]")}
            assert await pool.fetchval(
                "SELECT partstrat::text FROM pg_partitioned_table WHERE partrelid = $1::regclass", table
            ) == "r"
            # Every month of the old rows, and this month and the next two, got a partition: DEFAULT is empty.
            assert await pool.fetchval(f"SELECT count(*) FROM {table}_default") == 0
            for month in [date(t.year, t.month, 1) for t in old_months] + months_from(now.date(), 2):
                assert await pool.fetchval("SELECT to_regclass($1)::text", f"{table}_{month:%Y_%m}")
        assert await partition_of(pool, "impressions", "impression-0") == "impressions_2024_01"
        assert await partition_of(pool, "interactions", "click-1") == "interactions_2025_06"
        assert await pool.fetchval("SELECT count(*) FROM impression_keys") == 3
        assert await pool.fetchval("SELECT count(*) FROM interaction_keys") == 3

        # The moved events keep their idempotency keys: sending them again stores nothing.
        store = EventStore(pool)
        again = Impression("impression-1", "request-1", "search", ("a", "b"), 1, old_months[1])
        other_id_same_request = Impression("impression-x", "request-2", "search", ("a", "b"), 1, now)
        click = Interaction("click-0", "click", "request-0", "b", 2, old_months[0])
        assert await store.write([again, other_id_same_request], [click]) == (0, 3)
        assert await pool.fetchval("SELECT count(*) FROM impressions") == 3
    finally:
        await pool.close()


# --- partitions ---------------------------------------------------------------------------------


async def test_events_service_creates_partitions_ahead_at_start(postgres_url, database):
    running = await create_server(settings(postgres_url, SHELFWISE_EVENTS_PARTITION_MONTHS_AHEAD="3"), port=0)
    try:
        for table in ("impressions", "interactions"):
            for month in months_from(datetime.now(UTC).date(), 3):
                assert await database.fetchval("SELECT to_regclass($1)::text", f"{table}_{month:%Y_%m}")
    finally:
        await running.stop()


async def test_event_of_a_month_without_partition_lands_in_default_and_moves_when_its_partition_is_made(
    system, database
):
    long_ago = datetime(2003, 2, 10, 12, tzinfo=UTC)
    shown = impression_pb(occurred_at=long_ago)
    clicked = click_pb(shown.request_id)
    clicked.occurred_at.FromDatetime(long_ago + timedelta(minutes=1))
    async with create_channel(system.address("events")) as channel:
        response = await events_pb2_grpc.EventsServiceStub(channel).LogEvents(
            events_pb2.LogEventsRequest(impressions=[shown], interactions=[clicked])
        )
    assert (response.accepted, response.duplicates) == (2, 0)
    assert await partition_of(database, "impressions", shown.event_id) == "impressions_default"
    assert await partition_of(database, "interactions", clicked.event_id) == "interactions_default"

    async with database.acquire() as connection, connection.transaction():
        for table in ("impressions", "interactions"):
            assert await connection.fetchval("SELECT shelfwise_event_partition($1, $2)", table, date(2003, 2, 1))
    assert await partition_of(database, "impressions", shown.event_id) == "impressions_2003_02"
    assert await partition_of(database, "interactions", clicked.event_id) == "interactions_2003_02"
    async with database.acquire() as connection, connection.transaction():
        assert not await connection.fetchval("SELECT shelfwise_event_partition('impressions', '2003-02-20')")


# --- idempotent writes, COPY and unnest -----------------------------------------------------------


@pytest.mark.parametrize("write_method", ["copy", "unnest"])
async def test_write_stores_each_event_once_and_counts_repeats_as_duplicates(postgres_url, database, write_method):
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=2)
    try:
        store = EventStore(pool, write_method)
        now = datetime.now(UTC)
        tag = uuid.uuid4().hex
        first = Impression(
            f"i-{tag}", f"r-{tag}", "search", ("a", "b"), 1, now, query="tea",
            features=({"bm25": 1.25}, {}), interleaving_arms=("x", "y"),
            propensities=(0.25, 0.125), exploration_pool=(("b", {"bm25": 2.0}, 0.5), ("a", {}, 0.75), ("q", {}, 0.75)),
        )
        second = Impression(f"i2-{tag}", f"r2-{tag}", "recommend", ("c",), 11, now)
        same_request_other_id = Impression(f"i3-{tag}", f"r-{tag}", "search", ("z",), 1, now)
        click = Interaction(f"c-{tag}", "click", f"r-{tag}", "b", 2, now, quantity=1)
        purchase = Interaction(f"p-{tag}", "purchase", f"r2-{tag}", "c", 11, now, quantity=2, value=9.5)
        # Repeats inside one batch and across batches, and a second impression for a logged request.
        assert await store.write([first, first, second], [click, click]) == (3, 2)
        assert await store.write([first, same_request_other_id], [click, purchase]) == (1, 3)

        rows = await database.fetch(
            "SELECT event_id, request_id, query, product_ids, first_position, features, interleaving_arms,"
            " propensities, exploration_pool FROM impressions WHERE request_id = ANY($1::text[]) ORDER BY event_id",
            [f"r-{tag}", f"r2-{tag}"],
        )
        assert [(r["event_id"], r["product_ids"], r["first_position"]) for r in rows] == [
            (f"i-{tag}", ["a", "b"], 1),
            (f"i2-{tag}", ["c"], 11),
        ]
        assert json.loads(rows[0]["features"]) == [{"bm25": 1.25}, {}] and rows[0]["interleaving_arms"] == ["x", "y"]
        assert json.loads(rows[1]["features"]) == [] and rows[1]["interleaving_arms"] == []
        assert rows[0]["propensities"] == [0.25, 0.125] and rows[1]["propensities"] == []
        assert json.loads(rows[0]["exploration_pool"]) == [["b", {"bm25": 2.0}, 0.5], ["a", {}, 0.75], ["q", {}, 0.75]]
        assert json.loads(rows[1]["exploration_pool"]) == []
        interactions = await database.fetch(
            "SELECT event_id, type, quantity, value FROM interactions WHERE event_id = ANY($1::text[]) ORDER BY 1",
            [f"c-{tag}", f"p-{tag}"],
        )
        assert [tuple(r) for r in interactions] == [(f"c-{tag}", "click", 1, 0.0), (f"p-{tag}", "purchase", 2, 9.5)]
    finally:
        await pool.close()


# --- StreamEvents ---------------------------------------------------------------------------------


async def test_stream_events_acknowledges_each_committed_batch_in_order(system, database):
    shown = [impression_pb() for _ in range(3)]
    batches = [
        events_pb2.StreamEventsRequest(sequence=1, impressions=shown[:2]),
        events_pb2.StreamEventsRequest(sequence=2, impressions=[shown[2]], interactions=[click_pb(shown[0].request_id)]),
        events_pb2.StreamEventsRequest(sequence=3, impressions=[shown[1]]),  # sent again: a duplicate
    ]
    async with create_channel(system.address("events")) as channel:
        acknowledged = [
            (ack.sequence, ack.accepted, ack.duplicates)
            async for ack in events_pb2_grpc.EventsServiceStub(channel).StreamEvents(iter(batches))
        ]
    assert acknowledged == [(1, 2, 0), (2, 2, 0), (3, 0, 1)]
    ids = [m.event_id for m in shown]
    assert await database.fetchval("SELECT count(*) FROM impressions WHERE event_id = ANY($1::text[])", ids) == 3


async def test_stream_events_ends_with_invalid_argument_naming_the_field_and_keeps_earlier_batches(system, database):
    good, bad = impression_pb(), impression_pb(interleaving_arms=["only-one"])
    batches = [
        events_pb2.StreamEventsRequest(sequence=7, impressions=[good]),
        events_pb2.StreamEventsRequest(sequence=8, impressions=[bad]),
        events_pb2.StreamEventsRequest(sequence=9, impressions=[impression_pb()]),
    ]
    acknowledged = []
    async with create_channel(system.address("events")) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for ack in events_pb2_grpc.EventsServiceStub(channel).StreamEvents(iter(batches)):
                acknowledged.append(ack.sequence)
    assert acknowledged == [7]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("impressions[0].interleaving_arms: ")
    assert "batch sequence 8" in caught.value.details()
    assert await database.fetchval("SELECT count(*) FROM impressions WHERE event_id = $1", good.event_id) == 1
    assert await database.fetchval("SELECT count(*) FROM impressions WHERE event_id = $1", bad.event_id) == 0


# --- durability across a database restart -----------------------------------------------------------


async def test_no_acknowledged_event_is_lost_when_postgres_restarts_during_ingestion(own_postgres):
    running = await create_server(settings(own_postgres.url, SHELFWISE_EVENTS_WRITE_RETRY_SECONDS="60"), port=0)
    acknowledged: list[str] = []  # event ids of batches answered OK
    outcomes: list[str] = []
    stop_sending = asyncio.Event()
    restarted = asyncio.Event()
    retries_before = retries()

    async def send_unary(stub, worker: int) -> None:
        batch = 0
        while not stop_sending.is_set():
            batch += 1
            shown = [impression_pb(f"u{worker}-{batch}-{k}") for k in range(5)]
            # Every batch repeats the previous batch's last impression: stored once all the same.
            if batch > 1:
                shown.append(impression_pb(f"u{worker}-{batch - 1}-4"))
            try:
                await stub.LogEvents(events_pb2.LogEventsRequest(impressions=shown), timeout=60)
            except grpc.aio.AioRpcError as error:
                outcomes.append(error.code().name)
                continue
            outcomes.append("OK")
            acknowledged.extend(m.event_id for m in shown)

    async def send_stream(stub) -> None:
        sent: dict[int, list[str]] = {}
        # At most 4 batches in flight, as a real client would keep: an unbounded generator would
        # queue thousands of batches in the stream for the server to drain after the restart.
        in_flight = asyncio.Semaphore(4)

        async def batches():
            sequence = 0
            while not stop_sending.is_set():
                await in_flight.acquire()
                sequence += 1
                shown = [impression_pb(f"s-{sequence}-{k}") for k in range(5)]
                sent[sequence] = [m.event_id for m in shown]
                yield events_pb2.StreamEventsRequest(sequence=sequence, impressions=shown)

        try:
            async for ack in stub.StreamEvents(batches(), timeout=120):
                in_flight.release()
                outcomes.append("OK")
                acknowledged.extend(sent[ack.sequence])
        except grpc.aio.AioRpcError as error:
            outcomes.append(error.code().name)

    async def restart_postgres() -> None:
        try:
            await eventually(lambda: len(acknowledged) >= 50, 120, "50 acknowledged events before the restart")
            await asyncio.to_thread(own_postgres.stop)
            # Down until writes have failed and are being retried (30 s at most: the assertion
            # after the test says so if it never happened).
            for _ in range(600):
                if retries() > retries_before:
                    break
                await asyncio.sleep(0.05)
            await asyncio.to_thread(own_postgres.start)
            restarted.set()
            after_restart = len(acknowledged)
            await eventually(lambda: len(acknowledged) >= after_restart + 100, 180,
                             "100 more acknowledged events after PostgreSQL came back")
        finally:
            stop_sending.set()  # the senders stop whatever happened, so a failure cannot hang them

    try:
        async with create_channel(f"127.0.0.1:{running.port}") as channel:
            stub = events_pb2_grpc.EventsServiceStub(channel)
            await asyncio.gather(
                restart_postgres(), send_stream(stub), *(send_unary(stub, worker) for worker in range(3))
            )
    finally:
        await running.stop()

    assert restarted.is_set() and retries() > retries_before, "no write was ever retried: the restart was not seen"
    assert set(outcomes) <= {"OK", "UNAVAILABLE"}, outcomes
    assert outcomes.count("OK") > 10
    connection = await asyncpg.connect(own_postgres.url)
    try:
        stored = await connection.fetch("SELECT event_id, count(*) AS copies FROM impressions GROUP BY event_id")
    finally:
        await connection.close()
    copies = {row["event_id"]: row["copies"] for row in stored}
    missing = set(acknowledged) - set(copies)
    assert not missing, f"{len(missing)} acknowledged events are not stored"
    assert set(copies.values()) == {1}


# --- the gateway's buffer of impressions not sent yet -----------------------------------------------


def gateway_downstream(events_address: str):
    from services.gateway.config import GatewaySettings
    from services.gateway.downstream import Downstream

    return Downstream(GatewaySettings.from_env({"SHELFWISE_EVENTS_ADDRESS": events_address}))


def buffer_metric(name: str, attributes: dict | None = None) -> float:
    wanted = (attributes or {}).items()
    return sum(
        point.value for point in metric_points(f"shelfwise.gateway.{name}") if wanted <= dict(point.attributes).items()
    )


async def test_gateway_keeps_impressions_while_events_cannot_store_them_and_stores_each_once_later(own_postgres):
    from shelfwise.common.v1 import common_pb2
    from shelfwise.gateway.v1 import gateway_pb2

    from services.gateway.composer import Composer
    from services.gateway.config import StageDeadlines
    from services.gateway.request_context import Budget, RequestContext
    from services.gateway.stages import Page

    # The events service gives up on its database quickly, so the gateway hears UNAVAILABLE.
    events = await create_server(settings(own_postgres.url, SHELFWISE_EVENTS_WRITE_RETRY_SECONDS="0.3"), port=0)
    downstream = gateway_downstream(f"127.0.0.1:{events.port}")
    composer = Composer(downstream, StageDeadlines(1.0, 1.0, 1.0, 5.0), candidates=10)
    page = Page(
        results=[gateway_pb2.SearchResult(product=common_pb2.Product(id=f"p-{i}"), position=i + 1) for i in range(3)],
        total=3, next_token="", model_version="test",
    )
    request_ids = [f"buffered-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    buffered_before = buffer_metric("impressions_buffered")
    try:
        await asyncio.to_thread(own_postgres.stop)
        for request_id in request_ids:
            context = RequestContext(request_id, user_id="", session_id="", budget=Budget(None))
            composer.impressions.log(context, events_pb2.SURFACE_SEARCH, "x", page, 0)
        await composer.wait_for_impressions(timeout=30)
        assert len(composer.impressions.buffer) == 5
        assert buffer_metric("impressions_buffered") == buffered_before + 5

        await asyncio.to_thread(own_postgres.start)
        assert await composer.impressions.buffer.wait_until_empty(timeout=120)
        assert buffer_metric("impressions_buffered") == buffered_before
        assert composer.impressions.failed == 0 and composer.impressions.buffer.dropped == 0
        connection = await asyncpg.connect(own_postgres.url)
        try:
            rows = await connection.fetch(
                "SELECT request_id, count(*) AS copies FROM impressions WHERE request_id = ANY($1::text[]) GROUP BY 1",
                request_ids,
            )
        finally:
            await connection.close()
        assert {row["request_id"]: row["copies"] for row in rows} == {request_id: 1 for request_id in request_ids}
    finally:
        await composer.impressions.buffer.close()
        await downstream.close()
        await events.stop()


async def test_track_sends_the_buffered_impression_it_points_at_before_its_interactions(system, database):
    from shelfwise.gateway.v1 import gateway_pb2

    from services.gateway.composer import Composer
    from services.gateway.config import StageDeadlines
    from services.gateway.event_buffer import ImpressionBuffer
    from services.gateway.metrics import GatewayMetrics

    downstream = gateway_downstream(system.address("events"))
    composer = Composer(downstream, StageDeadlines(1.0, 1.0, 1.0, 5.0), candidates=10)
    # The same sender, but no resend during the test: only Track can store what it points at.
    composer.impressions.buffer = ImpressionBuffer(composer.impressions.buffer._send, GatewayMetrics(), first_delay=60.0)
    # As if their first sends had failed while events was down.
    waiting = [impression_pb(f"waiting-{uuid.uuid4().hex[:8]}") for _ in range(2)]
    for impression in waiting:
        composer.impressions.buffer.add(impression)
    try:
        response = await composer.track(
            gateway_pb2.TrackRequest(interactions=[click_pb(waiting[0].request_id)]), remaining=5.0
        )
        assert response.accepted == 1
        assert [m.request_id for m in composer.impressions.buffer._waiting] == [waiting[1].request_id]
        stored = await database.fetch(
            "SELECT request_id FROM impressions WHERE request_id = ANY($1::text[])", [m.request_id for m in waiting]
        )
        assert [row["request_id"] for row in stored] == [waiting[0].request_id]
    finally:
        await composer.impressions.buffer.close()
        await downstream.close()


async def test_full_impression_buffer_drops_the_oldest_and_counts_them():
    from services.gateway.event_buffer import ImpressionBuffer
    from services.gateway.metrics import GatewayMetrics
    from services.local.processes import free_ports

    (port,) = free_ports(1)  # nothing listens there: every send is UNAVAILABLE
    downstream = gateway_downstream(f"127.0.0.1:{port}")
    buffer = ImpressionBuffer(
        lambda batch: downstream.call(
            "events", downstream.events.LogEvents, events_pb2.LogEventsRequest(impressions=batch), 1.0
        ),
        GatewayMetrics(),
        capacity=3,
        first_delay=60.0,  # no resend during the test
    )
    dropped_before = buffer_metric("impressions_dropped", {"reason": "buffer_full"})
    buffered_before = buffer_metric("impressions_buffered")
    shown = [impression_pb(f"full-{uuid.uuid4().hex[:8]}-{i}") for i in range(5)]
    try:
        for impression in shown:
            buffer.add(impression)
        assert len(buffer) == 3 and buffer.dropped == 2
        assert [m.request_id for m in buffer._waiting] == [m.request_id for m in shown[2:]]
        assert buffer_metric("impressions_dropped", {"reason": "buffer_full"}) == dropped_before + 2
        assert buffer_metric("impressions_buffered") == buffered_before + 3
        await buffer.close()
        assert len(buffer) == 0 and buffer_metric("impressions_buffered") == buffered_before
        assert buffer_metric("impressions_dropped", {"reason": "shutdown"}) >= 3
    finally:
        await buffer.close()
        await downstream.close()


# --- the bench command ----------------------------------------------------------------------------


async def test_bench_events_prints_copy_and_unnest_rates_side_by_side(own_postgres):
    from services.cli.bench.events import bench_events

    report = await bench_events(own_postgres.url, events=40, batch_sizes=[10], concurrency=2, rounds=1)
    lines = report.splitlines()
    assert "unnest INSERT ev/s" in lines[1] and "COPY ev/s" in lines[1]
    assert [line.split()[:2] for line in lines[2:]] == [["LogEvents", "10"], ["StreamEvents", "10"]]
    connection = await asyncpg.connect(own_postgres.url)
    try:
        # Warm-up (200 per path) and 40 per path for each of the two RPCs, every one stored once.
        assert await connection.fetchval("SELECT count(*) FROM impressions") == 2 * 200 + 2 * 2 * 40
    finally:
        await connection.close()


async def test_a_write_is_attempted_once_even_when_its_retry_window_is_already_over(postgres_url, database):
    pool = await asyncpg.create_pool(postgres_url, min_size=1, max_size=1)
    try:
        tag = uuid.uuid4().hex
        event = Impression(f"i-{tag}", f"r-{tag}", "search", ("a",), 1, datetime.now(UTC))
        window_over = asyncio.get_running_loop().time() - 1.0
        assert await EventStore(pool).write([event], [], retry_until=window_over) == (1, 0)
        assert await database.fetchval("SELECT count(*) FROM impressions WHERE event_id = $1", event.event_id) == 1
    finally:
        await pool.close()

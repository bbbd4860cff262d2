"""Privacy of the event tables on a real PostgreSQL: user ids stored only as keyed pseudonyms
(history still found by the clear id), ids stored in clear before are hashed in place, and
retention drops old months with their idempotency keys."""

from __future__ import annotations

import os
import uuid
from datetime import date, datetime, timezone
from unittest import mock

import asyncpg
import pytest
from shelfwise.events.v1 import events_pb2, events_pb2_grpc

from services.common.channels import create_channel
from services.common.database import create_pool
from services.events.config import DEVELOPMENT_USER_ID_KEY, EventsSettings
from services.events.model import Impression, Interaction
from services.events.partitions import ensure_partitions, retention_cutoff
from services.events.server import create_server
from services.events.pseudonyms import UserIdPseudonyms, pseudonymise_stored_user_ids
from services.events.queries import EventQueries
from services.events.store import EventStore

UTC = timezone.utc
PSEUDONYMS = UserIdPseudonyms(DEVELOPMENT_USER_ID_KEY)


def shown_and_clicked(user_id: str, occurred_at: datetime | None = None) -> tuple[Impression, Interaction]:
    request_id = uuid.uuid4().hex
    occurred_at = occurred_at or datetime.now(UTC)
    impression = Impression(
        event_id=f"i-{request_id}", request_id=request_id, surface="search", product_ids=("p1", "p2"),
        first_position=1, occurred_at=occurred_at, user_id=user_id,
    )
    click = Interaction(
        event_id=f"c-{request_id}", type="click", request_id=request_id, product_id="p2", position=2,
        occurred_at=occurred_at, user_id=user_id,
    )
    return impression, click


async def test_user_ids_are_stored_as_keyed_pseudonyms_and_history_is_found_by_the_clear_id(postgres_url, database):
    user = f"alice-{uuid.uuid4().hex[:8]}"
    key = b"k" * 32
    environ = {"SHELFWISE_DATABASE_URL": postgres_url, "SHELFWISE_USER_ID_KEY": key.decode()}
    settings = EventsSettings.from_env(environ)
    assert settings.user_id_key == key and key.decode() not in repr(settings)
    # The events server's store takes the key from the process environment, as in a pod.
    with mock.patch.dict(os.environ, {"SHELFWISE_USER_ID_KEY": key.decode()}):
        running = await create_server(settings, port=0)
    try:
        impression, click = shown_and_clicked(user)
        request = events_pb2.LogEventsRequest(
            impressions=[events_pb2.Impression(
                event_id=impression.event_id, request_id=impression.request_id, surface=events_pb2.SURFACE_SEARCH,
                product_ids=list(impression.product_ids), user_id=user,
            )],
            interactions=[events_pb2.Interaction(
                event_id=click.event_id, type=events_pb2.INTERACTION_TYPE_CLICK, request_id=click.request_id,
                product_id="p2", position=2, user_id=user,
            )],
        )
        async with create_channel(f"127.0.0.1:{running.port}") as channel:
            stub = events_pb2_grpc.EventsServiceStub(channel)
            assert (await stub.LogEvents(request)).accepted == 2
            history = await stub.ListUserHistory(events_pb2.ListUserHistoryRequest(user_id=user))
        assert [entry.product_id for entry in history.entries] == ["p2"]
    finally:
        await running.stop()
    expected = UserIdPseudonyms(key)(user)
    assert expected.startswith("pseudo:") and expected != PSEUDONYMS(user)
    for table in ("impressions", "interactions"):
        stored = await database.fetchval(f"SELECT user_id FROM {table} WHERE request_id = $1", impression.request_id)
        assert stored == expected
        assert await database.fetchval(f"SELECT count(*) FROM {table} WHERE user_id = $1", user) == 0


def test_pseudonyms_are_stable_keyed_and_leave_anonymous_events_anonymous():
    assert PSEUDONYMS("u1") == PSEUDONYMS("u1") != PSEUDONYMS("u2")
    assert UserIdPseudonyms(b"x" * 16)("u1") != PSEUDONYMS("u1")
    assert PSEUDONYMS("") == ""
    # A pseudonym given as an id is hashed again: pseudonyms seen in the tables open no history.
    assert PSEUDONYMS(PSEUDONYMS("u1")) != PSEUDONYMS("u1")
    assert UserIdPseudonyms.is_pseudonym(PSEUDONYMS("u1")) and not UserIdPseudonyms.is_pseudonym("u1")
    with pytest.raises(ValueError):
        UserIdPseudonyms(b"short")


async def test_user_ids_stored_in_clear_before_are_hashed_in_place_and_history_still_finds_them(database):
    user = f"bob-{uuid.uuid4().hex[:8]}"
    long_ago = datetime(2004, 5, 6, 7, tzinfo=UTC)
    impression, click = shown_and_clicked(user, long_ago)
    # As a previous version stored them: the clear id.
    await database.execute(
        "INSERT INTO impressions (event_id, request_id, occurred_at, user_id, surface, product_ids, first_position)"
        " VALUES ($1, $2, $3, $4, 'search', $5, 1)",
        impression.event_id, impression.request_id, long_ago, user, list(impression.product_ids),
    )
    await database.execute(
        "INSERT INTO interactions (event_id, type, request_id, product_id, position, occurred_at, user_id)"
        " VALUES ($1, 'click', $2, 'p2', 2, $3, $4)",
        click.event_id, click.request_id, long_ago, user,
    )
    # The first run covers every row (a previous run would only look at recent months).
    await database.execute("DELETE FROM event_maintenance WHERE task = 'pseudonymise-user-ids'")
    assert await pseudonymise_stored_user_ids(database, PSEUDONYMS) >= 1
    for table in ("impressions", "interactions"):
        assert await database.fetchval(
            f"SELECT user_id FROM {table} WHERE request_id = $1", impression.request_id
        ) == PSEUDONYMS(user)
    assert [entry.product_id for entry in await EventQueries(database, pseudonyms=PSEUDONYMS).history(user, "", 10)] == ["p2"]
    # Later runs find nothing left to do, and look only at recent months.
    assert await pseudonymise_stored_user_ids(database, PSEUDONYMS) == 0


@pytest.fixture
async def own_database(postgres_url):
    """A database of its own in the session's PostgreSQL: retention drops partitions."""
    name = f"privacy_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.replace("/postgres?", f"/{name}?")
    pool = await create_pool(url, max_size=2)
    yield pool
    await pool.close()
    await admin.execute(f'DROP DATABASE "{name}"')
    await admin.close()


def test_retention_keeps_this_month_and_the_ones_before_it():
    assert retention_cutoff(date(2026, 11, 30), 13) == date(2025, 10, 1)
    assert retention_cutoff(date(2026, 1, 15), 1) == date(2025, 12, 1)
    assert retention_cutoff(date(2026, 1, 15), 0) == date(2026, 1, 1)


async def test_retention_drops_old_months_their_default_rows_and_their_idempotency_keys(own_database):
    pool = own_database
    today = date(2026, 11, 15)
    old, kept = datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 9, 10, tzinfo=UTC)
    in_default = datetime(2025, 1, 10, tzinfo=UTC)  # a month that never had a partition
    async with pool.acquire() as connection, connection.transaction():
        for parent in ("impressions", "interactions"):
            for month in (date(2026, 3, 1), date(2026, 9, 1)):
                await connection.fetchval("SELECT shelfwise_event_partition($1, $2)", parent, month)
    store = EventStore(pool, pseudonyms=PSEUDONYMS)
    events = {when: shown_and_clicked("carol", when) for when in (old, kept, in_default)}
    await store.write([i for i, _ in events.values()], [c for _, c in events.values()])

    await ensure_partitions(pool, months_ahead=0, today=today, retention_months=2, pseudonyms=PSEUDONYMS)

    for parent in ("impressions", "interactions"):
        assert await pool.fetchval("SELECT to_regclass($1)::text", f"{parent}_2026_03") is None
        assert await pool.fetchval("SELECT to_regclass($1)::text", f"{parent}_2026_09") == f"{parent}_2026_09"
    remaining = {row["event_id"] for row in await pool.fetch("SELECT event_id FROM impressions UNION ALL SELECT event_id FROM interactions")}
    keys = {row["event_id"] for row in await pool.fetch("SELECT event_id FROM impression_keys UNION ALL SELECT event_id FROM interaction_keys")}
    kept_ids = {events[kept][0].event_id, events[kept][1].event_id}
    assert remaining == keys == kept_ids
    # The same event sent again within retention is still a duplicate.
    assert await store.write([events[kept][0]], []) == (0, 1)


async def test_retention_is_off_unless_configured(own_database):
    pool = own_database
    async with pool.acquire() as connection, connection.transaction():
        await connection.fetchval("SELECT shelfwise_event_partition('impressions', '2001-01-01')")
    await ensure_partitions(pool, months_ahead=0, retention_months=EventsSettings.from_env(
        {"SHELFWISE_DATABASE_URL": "postgresql://unused"}).retention_months, pseudonyms=PSEUDONYMS)
    assert await pool.fetchval("SELECT to_regclass('impressions_2001_01')::text") == "impressions_2001_01"

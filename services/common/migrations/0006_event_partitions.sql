-- Events at scale: impressions and interactions become tables partitioned by month of
-- occurred_at, with a DEFAULT partition so that no event is ever rejected for its date. Every
-- existing row is moved into the new tables.
--
-- Idempotency. PostgreSQL requires the partition key in every unique constraint of a
-- partitioned table, so event_id alone (and impressions.request_id) can no longer be unique
-- there. A key of (event_id, occurred_at) is not enough: a client that leaves occurred_at
-- empty gets the time of receipt, so its retry would carry another occurred_at and be stored
-- twice. Instead two narrow unpartitioned tables hold the idempotency keys: every write inserts
-- the key first (ON CONFLICT DO NOTHING) and stores the event only when its key is new. They
-- also keep request_id unique per impression, which attribution relies on. The partitioned
-- tables keep a primary key (event_id, occurred_at) as a second guard and as the index for
-- look-ups by event id.
--
-- Attribution. A foreign key from interactions to impressions(request_id) cannot stay (no
-- unique request_id on a partitioned table); EventStore._check_attribution checks every
-- interaction against its impression (request id, product and position) in the same
-- transaction that stores it.
--
-- Partitions. shelfwise_event_partition(parent, in_month) creates one month's partition,
-- moving rows of that month out of the DEFAULT partition first (rows land there when their
-- month had no partition yet); the events service calls it for the current month and the
-- next ones at start-up and periodically. It attaches a prepared table (ATTACH takes a weaker
-- lock on the parent than CREATE TABLE ... PARTITION OF), under an advisory lock so that
-- replicas starting together do not race.

CREATE TABLE impression_keys (
    event_id   text PRIMARY KEY,
    request_id text NOT NULL UNIQUE
);
CREATE TABLE interaction_keys (
    event_id text PRIMARY KEY
);

-- The old tables step aside; their constraints and indexes go first so that the new tables
-- can take the same names.
ALTER TABLE interactions RENAME TO interactions_unpartitioned;
ALTER TABLE impressions RENAME TO impressions_unpartitioned;
ALTER TABLE interactions_unpartitioned DROP CONSTRAINT interactions_request_id_fkey;
ALTER TABLE interactions_unpartitioned DROP CONSTRAINT interactions_pkey;
DROP INDEX interactions_request_id_idx, interactions_product_time_idx, interactions_user_time_idx,
    interactions_session_time_idx;
ALTER TABLE impressions_unpartitioned DROP CONSTRAINT impressions_pkey;
ALTER TABLE impressions_unpartitioned DROP CONSTRAINT impressions_request_id_key;
DROP INDEX impressions_occurred_at_idx;

CREATE TABLE impressions (
    event_id          text NOT NULL,
    request_id        text NOT NULL,
    occurred_at       timestamptz NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    user_id           text NOT NULL DEFAULT '',
    session_id        text NOT NULL DEFAULT '',
    surface           text NOT NULL,
    query             text NOT NULL DEFAULT '',
    product_ids       text[] NOT NULL,
    first_position    integer NOT NULL CHECK (first_position >= 1),
    model_version     text NOT NULL DEFAULT '',
    experiment_arm    text NOT NULL DEFAULT '',
    features          jsonb NOT NULL DEFAULT '[]'::jsonb,
    interleaving_arms text[] NOT NULL DEFAULT '{}',
    CONSTRAINT impressions_pkey PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX impressions_request_id_idx ON impressions (request_id);
CREATE INDEX impressions_occurred_at_idx ON impressions (occurred_at);
CREATE TABLE impressions_default PARTITION OF impressions DEFAULT;

CREATE TABLE interactions (
    event_id     text NOT NULL,
    type         text NOT NULL CHECK (type IN ('click', 'add_to_cart', 'purchase')),
    request_id   text NOT NULL,
    product_id   text NOT NULL,
    position     integer NOT NULL CHECK (position >= 1),
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    user_id      text NOT NULL DEFAULT '',
    session_id   text NOT NULL DEFAULT '',
    quantity     integer NOT NULL DEFAULT 1 CHECK (quantity >= 1),
    value        double precision NOT NULL DEFAULT 0 CHECK (value >= 0),
    CONSTRAINT interactions_pkey PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX interactions_request_id_idx ON interactions (request_id);
CREATE INDEX interactions_product_time_idx ON interactions (product_id, occurred_at);
CREATE INDEX interactions_user_time_idx ON interactions (user_id, occurred_at) WHERE user_id <> '';
CREATE INDEX interactions_session_time_idx ON interactions (session_id, occurred_at) WHERE session_id <> '';
CREATE TABLE interactions_default PARTITION OF interactions DEFAULT;

CREATE FUNCTION shelfwise_event_partition(parent text, in_month date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    first_day date := date_trunc('month', in_month)::date;
    part_name text := format('%s_%s', parent, to_char(first_day, 'YYYY_MM'));
    -- Months in UTC, whatever the session's time zone.
    lower_bound timestamptz := first_day::timestamp AT TIME ZONE 'UTC';
    upper_bound timestamptz := (first_day + interval '1 month')::timestamp AT TIME ZONE 'UTC';
BEGIN
    IF parent NOT IN ('impressions', 'interactions') THEN
        RAISE EXCEPTION 'parent must be impressions or interactions, got %', parent;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('shelfwise_event_partition'));
    IF to_regclass(part_name) IS NOT NULL THEN
        RETURN false;
    END IF;
    -- Parent first, then DEFAULT (the order writers take them): nothing lands in DEFAULT for
    -- this month between moving its rows out and attaching the new partition.
    EXECUTE format('LOCK TABLE %I IN SHARE UPDATE EXCLUSIVE MODE', parent);
    EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', parent || '_default');
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', part_name, parent);
    EXECUTE format(
        'WITH moved AS (DELETE FROM %I WHERE occurred_at >= $1 AND occurred_at < $2 RETURNING *) '
        'INSERT INTO %I SELECT * FROM moved',
        parent || '_default', part_name
    ) USING lower_bound, upper_bound;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   parent, part_name, lower_bound, upper_bound);
    RETURN true;
END
$$;

-- Partitions for every month that holds events, and for this month and the next two, before
-- the rows move (so none of them goes through DEFAULT).
SELECT shelfwise_event_partition(parent, month::date)
FROM (
    SELECT 'impressions' AS parent, date_trunc('month', occurred_at AT TIME ZONE 'UTC') AS month
    FROM impressions_unpartitioned
    UNION
    SELECT 'interactions', date_trunc('month', occurred_at AT TIME ZONE 'UTC') FROM interactions_unpartitioned
    UNION
    SELECT parent, date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => ahead)
    FROM unnest(ARRAY['impressions', 'interactions']) AS parent, generate_series(0, 2) AS ahead
) AS months
ORDER BY parent, month;

INSERT INTO impression_keys (event_id, request_id)
SELECT event_id, request_id FROM impressions_unpartitioned;
INSERT INTO interaction_keys (event_id)
SELECT event_id FROM interactions_unpartitioned;

INSERT INTO impressions (event_id, request_id, occurred_at, received_at, user_id, session_id, surface, query,
                         product_ids, first_position, model_version, experiment_arm, features, interleaving_arms)
SELECT event_id, request_id, occurred_at, received_at, user_id, session_id, surface, query,
       product_ids, first_position, model_version, experiment_arm, features, interleaving_arms
FROM impressions_unpartitioned;
INSERT INTO interactions (event_id, type, request_id, product_id, position, occurred_at, received_at, user_id,
                          session_id, quantity, value)
SELECT event_id, type, request_id, product_id, position, occurred_at, received_at, user_id,
       session_id, quantity, value
FROM interactions_unpartitioned;

DROP TABLE interactions_unpartitioned;
DROP TABLE impressions_unpartitioned;

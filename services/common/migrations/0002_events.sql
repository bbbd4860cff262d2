-- Behaviour events. Event ids make every write idempotent; interactions point at the
-- impression (request id + position) that showed the product.
CREATE TABLE impressions (
    event_id        text PRIMARY KEY,
    request_id      text NOT NULL UNIQUE,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    user_id         text NOT NULL DEFAULT '',
    session_id      text NOT NULL DEFAULT '',
    surface         text NOT NULL,
    query           text NOT NULL DEFAULT '',
    product_ids     text[] NOT NULL,
    first_position  integer NOT NULL CHECK (first_position >= 1),
    model_version   text NOT NULL DEFAULT '',
    experiment_arm  text NOT NULL DEFAULT ''
);
CREATE INDEX impressions_occurred_at_idx ON impressions (occurred_at);

CREATE TABLE interactions (
    event_id     text PRIMARY KEY,
    type         text NOT NULL CHECK (type IN ('click', 'add_to_cart', 'purchase')),
    request_id   text NOT NULL REFERENCES impressions (request_id),
    product_id   text NOT NULL,
    position     integer NOT NULL CHECK (position >= 1),
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    user_id      text NOT NULL DEFAULT '',
    session_id   text NOT NULL DEFAULT '',
    quantity     integer NOT NULL DEFAULT 1 CHECK (quantity >= 1),
    value        double precision NOT NULL DEFAULT 0 CHECK (value >= 0)
);
CREATE INDEX interactions_request_id_idx ON interactions (request_id);
CREATE INDEX interactions_product_time_idx ON interactions (product_id, occurred_at);

-- Deletions as a change feed: every retrieval replica applies other replicas' upserts and
-- deletes to its own in-memory indexes (products.updated_at covers the upserts).
CREATE TABLE product_deletions (
    product_id text NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX product_deletions_deleted_at_idx ON product_deletions (deleted_at);

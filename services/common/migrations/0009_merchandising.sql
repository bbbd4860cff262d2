-- Availability and listing time of products, and the merchandising rules store (issue 28).
--
-- in_stock: whether the shop can sell the product now (recommendations leave the others out).
-- created_at: when the product first entered the catalogue, never changed by later upserts;
-- listed_at: the listing time the catalogue gave, if any. Sort NEWEST reads
-- COALESCE(listed_at, created_at). Products already here count as created at their last update.
ALTER TABLE products
    ADD COLUMN in_stock boolean NOT NULL DEFAULT true,
    ADD COLUMN listed_at timestamptz,
    ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
UPDATE products SET created_at = updated_at;

-- Merchandising rules (pin, hide, bury, boost, synonym), one row per rule id, the rule itself
-- as JSON (the Rule message's fields). Every write takes the next value of
-- merchandising_rule_versions, so max(version) over the table, deleted rows included, is the
-- store's version: retrieval replicas poll it and reload the rules when it moves. A deleted
-- rule keeps its row (deleted = true) so that the version never moves backwards.
CREATE SEQUENCE merchandising_rule_versions;
CREATE TABLE merchandising_rules (
    id          text PRIMARY KEY,
    rule        jsonb NOT NULL,
    version     bigint NOT NULL,
    deleted     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX merchandising_rules_version_idx ON merchandising_rules (version);

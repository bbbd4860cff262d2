-- Exploration: for a search whose order the gateway sampled (SHELFWISE_EXPLORATION_SHARE),
-- propensities[i] is the probability that product_ids[i] was shown at its position under that
-- sampling; empty for a deterministic order. Off-policy evaluation (`shelfwise eval offpolicy`)
-- weights the clicks of explored impressions by it. On the partitioned parent, so every
-- partition (existing and future) gets the column.
-- exploration_pool: the ranked products the explored page was drawn from, best first, as a
-- JSON array of [product id, {"feature name": value}, probability it was shown on the page]
-- (empty when not explored).
ALTER TABLE impressions
    ADD COLUMN propensities real[] NOT NULL DEFAULT '{}',
    ADD COLUMN exploration_pool jsonb NOT NULL DEFAULT '[]'::jsonb;

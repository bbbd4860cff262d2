-- The catalogue: the system of record for products. Retrieval writes it and builds its
-- indexes from it; query understanding reads its vocabulary from it.
CREATE TABLE products (
    id          text PRIMARY KEY,
    title       text NOT NULL,
    description text NOT NULL DEFAULT '',
    brand       text NOT NULL DEFAULT '',
    category    text NOT NULL DEFAULT '',
    price       double precision NOT NULL CHECK (price >= 0),
    currency    text NOT NULL DEFAULT 'USD',
    attributes  jsonb NOT NULL DEFAULT '{}'::jsonb,
    locale      text NOT NULL DEFAULT '',
    extra       jsonb NOT NULL DEFAULT '{}'::jsonb,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX products_category_idx ON products (category);
CREATE INDEX products_updated_at_idx ON products (updated_at);

-- Product embeddings cached per encoder version, so a restart does not re-encode the
-- catalogue. content_hash detects products whose text changed since they were encoded.
CREATE TABLE product_embeddings (
    product_id    text NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    model_version text NOT NULL,
    content_hash  text NOT NULL,
    vector        bytea NOT NULL,
    PRIMARY KEY (product_id, model_version)
);

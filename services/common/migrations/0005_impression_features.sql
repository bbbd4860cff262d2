-- The ranking features and interleaving arms served with each impression, so that a CTR head
-- is trained on exactly the features the ranker used and interleaved experiments can be
-- attributed per product. Both are aligned with product_ids and empty when not logged:
--   features          a JSON array, features[i] = {"feature name": value} of product_ids[i]
--                     (an absent feature means 0);
--   interleaving_arms the arm that contributed product_ids[i] (team-draft interleaving).
-- Other components read these columns by name and format: keep them as they are.
ALTER TABLE impressions
    ADD COLUMN features jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN interleaving_arms text[] NOT NULL DEFAULT '{}';

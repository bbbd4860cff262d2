-- Privacy of the event tables: pseudonymous user ids and a retention period.
--
-- Pseudonyms. From this version on the events service stores, in impressions.user_id and
-- interactions.user_id, a keyed hash of the shopper's id instead of the id itself:
-- 'pseudo:' || hex(HMAC-SHA256(SHELFWISE_USER_ID_KEY, user_id)). Readers that group or join by
-- user (training, experiment reports, history for Recommend, which hashes the requested id the
-- same way) work unchanged. The key is not known to SQL, so rows stored before this version are
-- hashed in place by the events service itself (EventStore.pseudonymise_stored_user_ids, run by
-- the partition maintenance at start-up and then periodically). `event_maintenance` records
-- when that last ran: the first run covers every row, later runs only recent months (rows that
-- pods of the previous version may still write during a rolling update).
--
-- Retention. Old monthly partitions are dropped whole (SHELFWISE_EVENTS_RETENTION_MONTHS). The
-- idempotency keys of their events must go too, or the key tables would grow for ever: they
-- get the event's occurred_at, filled here for the keys already stored (NULL only for a key
-- whose event is gone; such keys are kept, as before).

CREATE TABLE event_maintenance (
    task    text PRIMARY KEY,
    done_at timestamptz NOT NULL
);

ALTER TABLE impression_keys ADD COLUMN occurred_at timestamptz;
ALTER TABLE interaction_keys ADD COLUMN occurred_at timestamptz;

UPDATE impression_keys k SET occurred_at = i.occurred_at FROM impressions i WHERE i.event_id = k.event_id;
UPDATE interaction_keys k SET occurred_at = x.occurred_at FROM interactions x WHERE x.event_id = k.event_id;

CREATE INDEX impression_keys_occurred_at_idx ON impression_keys (occurred_at);
CREATE INDEX interaction_keys_occurred_at_idx ON interaction_keys (occurred_at);

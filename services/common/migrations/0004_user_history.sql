-- Personal recommendations and personal ranking read a shopper's recent interactions at
-- request time (events.ListUserHistory), by user id or, for shoppers not signed in, by session.
CREATE INDEX interactions_user_time_idx ON interactions (user_id, occurred_at) WHERE user_id <> '';
CREATE INDEX interactions_session_time_idx ON interactions (session_id, occurred_at) WHERE session_id <> '';

-- Inbox claims by stream sequence are replaced by event-id claims in each projection (`applied_events`).
-- The outbox remembers when a row was first sent, so a row left unconfirmed past the deduplication window
-- is checked against the log before it is sent again.

DROP TABLE processed_messages;

ALTER TABLE outbox ADD COLUMN attempted_at timestamptz;

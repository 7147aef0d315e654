-- Claims are kept for the newest events only (`CLAIMS_KEPT` in mtm.platform.projection): the position orders them.
-- A duplicate arrives within moments of its original (a redelivery, a relay's re-send); older re-sends of an input
-- are recognised by the service's own ledger (reconciliation's `transitions`), not by these claims.

ALTER TABLE applied_events ADD COLUMN position bigserial;
CREATE INDEX applied_events_position ON applied_events (position);

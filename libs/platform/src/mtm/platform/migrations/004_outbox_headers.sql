-- Headers an event is published with besides its id: the W3C trace context of the step that decided it, so a
-- flow stays one trace across the relay (NULL: none, e.g. tracing off).

ALTER TABLE outbox ADD COLUMN headers jsonb;

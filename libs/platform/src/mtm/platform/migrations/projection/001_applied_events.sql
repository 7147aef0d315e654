-- Every event a projection has applied (or, for events it does not keep, recorded): the idempotence guard.
-- Lives in the projection's schema, so a rebuild builds it afresh and swaps it in with the tables.

CREATE TABLE applied_events (
    event_id uuid PRIMARY KEY
);

-- Reconciliations of each transition of care, and each patient's current medication list with provenance.
-- Documents are `json`, not `jsonb`: they are written on the hot path and read whole, never queried inside.

CREATE TABLE reconciliations (
    event_id            uuid        PRIMARY KEY,
    transition_event_id uuid        NOT NULL UNIQUE,
    patient_id          text        NOT NULL,
    stream_seq          bigint      NOT NULL,
    item_count          integer     NOT NULL,
    discrepancy_count   integer     NOT NULL,
    medications_reconciled json     NOT NULL, -- the event as published (its data is the reconciliation)
    recorded_at         timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX reconciliations_patient ON reconciliations (patient_id, stream_seq);

CREATE TABLE medication_lists (
    patient_id    text        PRIMARY KEY,
    last_seq      bigint      NOT NULL,
    last_event_id uuid        NOT NULL,
    medication_list json      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);

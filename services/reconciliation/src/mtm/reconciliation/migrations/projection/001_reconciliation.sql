-- Reconciliations of each transition of care, and each patient's current medication list with provenance:
-- a projection of MedicationsReconciled. Every column comes from an event, so a rebuild gives these rows.
-- Documents are `json`, not `jsonb`: they are written on the hot path and read whole, never queried inside.

CREATE TABLE reconciliations (
    event_id               uuid        PRIMARY KEY,
    transition_event_id    uuid        NOT NULL UNIQUE,
    patient_id             text        NOT NULL,
    item_count             integer     NOT NULL,
    discrepancy_count      integer     NOT NULL,
    medications_reconciled json        NOT NULL, -- the event as published (its data is the reconciliation)
    reconciled_at          timestamptz NOT NULL
);

CREATE INDEX reconciliations_patient ON reconciliations (patient_id, reconciled_at);

CREATE TABLE medication_lists (
    patient_id      text        PRIMARY KEY,
    last_event_id   uuid        NOT NULL,
    medication_list json        NOT NULL,
    updated_at      timestamptz NOT NULL
);

-- The keeper of patients' event keys (reconciliation): each key wrapped with the key-encryption key, and the
-- patients erased. Not a projection: keys are the root of erasure and are never rebuilt from the log.

CREATE TABLE patient_keys (
    patient_id text        PRIMARY KEY,
    key_id     text        NOT NULL,
    wrapped    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE erased_patients (
    patient_id text        PRIMARY KEY,
    reason     text        NOT NULL,
    erased_at  timestamptz NOT NULL DEFAULT now()
);

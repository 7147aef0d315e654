-- What review checks a pharmacy fill against: the member's latest reconciliation (the list they went home with,
-- and their allergies, conditions and labs) and their fills. Projections of MedicationsReconciled and
-- MedicationDispensed, each kept by the consumer that reacts to it, so a rebuild from the log gives these rows.

CREATE TABLE latest_reconciliations (
    patient_id      text        PRIMARY KEY,
    event_id        uuid        NOT NULL,
    reconciled_at   timestamptz NOT NULL,
    reconciliation  json        NOT NULL   -- the Reconciliation of the latest MedicationsReconciled, in log order
);

CREATE TABLE fills (
    event_id        uuid        PRIMARY KEY,  -- the MedicationDispensed event
    patient_id      text        NOT NULL,
    dispense_id     text        NOT NULL,
    filled_on       date        NOT NULL,
    dispense        json        NOT NULL,     -- the Dispense
    recorded_at     timestamptz NOT NULL
);
CREATE INDEX fills_patient ON fills (patient_id, filled_on);

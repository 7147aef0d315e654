-- Every discharge recorded on the log, by id, with a digest of what it said: a reused id for another discharge
-- and an encounter sent again under a new id are recognised (the id of a resend says nothing; its content does).

CREATE TABLE transitions (
    event_id     uuid        PRIMARY KEY,
    patient_id   text        NOT NULL,
    encounter_id text,
    digest       text        NOT NULL,
    recorded_at  timestamptz NOT NULL
);

CREATE INDEX transitions_encounter ON transitions (patient_id, encounter_id) WHERE encounter_id IS NOT NULL;

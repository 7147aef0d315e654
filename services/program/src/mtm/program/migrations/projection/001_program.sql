-- The MTM program's projection of the patient log. Every column comes from an event, so a rebuild gives these rows.
-- Inputs (reconciled discharges, fills) count up `inputs_seen`; a determination records how many it took into
-- account, so an evaluation is due again whenever inputs arrived since (whatever order the two reach the table).

CREATE TABLE members (
    patient_id        text    PRIMARY KEY,
    birth_date        date,
    conditions        json    NOT NULL DEFAULT '[]', -- of the latest reconciled discharge: [{system, code, clinical_status}]
    medications       json    NOT NULL DEFAULT '[]', -- its current list: [{key, course_days}]
    inputs_seen       integer NOT NULL DEFAULT 0,
    inputs_evaluated  integer NOT NULL DEFAULT 0,
    last_input        text,                          -- discharge | fill
    evaluated_on      date,
    next_review_on    date,                          -- the first day of the next quarter after the last determination
    eligible          boolean,
    determination     json,                          -- the last MtmEligibilityDetermined's data
    adherence_year    integer,
    adherence_below   text[]  NOT NULL DEFAULT '{}'
);

CREATE INDEX members_due ON members (next_review_on);

CREATE TABLE fills (
    event_id     uuid    PRIMARY KEY,
    patient_id   text    NOT NULL,
    dispense_id  text    NOT NULL,
    drug_key     text    NOT NULL,
    ingredients  text[]  NOT NULL,
    filled_on    date    NOT NULL,
    days_supply  integer NOT NULL,
    total_cost   double precision,
    UNIQUE (patient_id, dispense_id)
);

CREATE INDEX fills_patient ON fills (patient_id, filled_on);

CREATE TABLE determinations (
    event_id      uuid    PRIMARY KEY,
    patient_id    text    NOT NULL,
    program_year  integer NOT NULL,
    determined_on date    NOT NULL,
    eligible      boolean NOT NULL,
    basis         text,
    trigger       text    NOT NULL
);

CREATE INDEX determinations_patient ON determinations (patient_id, determined_on);

CREATE TABLE enrolments (
    patient_id          text    NOT NULL,
    program_year        integer NOT NULL,
    enrolled_on         date    NOT NULL,
    criteria_met_on     date    NOT NULL,
    basis               text    NOT NULL,
    event_id            uuid    NOT NULL,
    disenrolled_on      date,
    disenrolment_reason text,
    PRIMARY KEY (patient_id, program_year)
);

CREATE TABLE adherence (
    patient_id       text    NOT NULL,
    measurement_year integer NOT NULL,
    drug_class       text    NOT NULL,
    status           text    NOT NULL,
    pdc              double precision,
    period_end       date    NOT NULL,
    event_id         uuid    NOT NULL,
    PRIMARY KEY (patient_id, measurement_year, drug_class)
);

-- What the CMS report counts of the reviews (review's events) and the prescriber recommendations (referral's).
CREATE TABLE reviews (
    task_id         uuid    PRIMARY KEY,
    patient_id      text    NOT NULL,
    reason          text    NOT NULL,
    created_on      date    NOT NULL,
    completed_on    date,
    service         text,   -- cmr | tmr: what the completed review counts as for CMS
    performed_on    date,
    delivery_method text,
    recipient       text,
    provider_type   text,
    accepted_alerts integer[] NOT NULL DEFAULT '{}' -- positions of alerts a documented problem came from
);

CREATE INDEX reviews_patient ON reviews (patient_id);

CREATE TABLE prescriber_recommendations (
    referral_id  uuid    PRIMARY KEY,
    patient_id   text    NOT NULL,
    requested_on date    NOT NULL,
    decision     text,
    answered_on  date
);

CREATE INDEX prescriber_recommendations_patient ON prescriber_recommendations (patient_id);

CREATE TABLE alerts (
    task_id    uuid    NOT NULL,
    position   integer NOT NULL,
    patient_id text    NOT NULL,
    rule_id    text    NOT NULL,
    kind       text    NOT NULL,
    severity   text    NOT NULL,
    tier       text    NOT NULL,
    raised_on  date    NOT NULL,
    PRIMARY KEY (task_id, position)
);

CREATE TABLE alert_overrides (
    override_id uuid    PRIMARY KEY,
    task_id     uuid    NOT NULL,
    position    integer NOT NULL,
    rule_id     text    NOT NULL,
    reason_code text    NOT NULL,
    overridden_on date  NOT NULL
);

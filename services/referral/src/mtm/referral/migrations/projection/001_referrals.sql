-- Referrals (FHIR ServiceRequest): a projection of ReferralRequested and ReferralAnswered.
-- Every column comes from an event (times are the events' times), so a rebuild from the log gives these rows.

CREATE TABLE referrals (
    referral_id     uuid        PRIMARY KEY,
    task_id         uuid        NOT NULL,
    patient_id      text        NOT NULL,
    correlation_id  uuid        NOT NULL,
    physician_id    text        NOT NULL,
    pharmacist_id   text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('requested', 'accepted', 'declined', 'modified')),
    decision        text,
    referral        json        NOT NULL,
    answer          json,
    requested_at    timestamptz NOT NULL,
    answered_at     timestamptz
);

CREATE INDEX referrals_physician_open ON referrals (physician_id, status);
CREATE INDEX referrals_task ON referrals (task_id);

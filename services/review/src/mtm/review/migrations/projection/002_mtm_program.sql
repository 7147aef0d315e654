-- The MTM program in review's projection: task kinds and deadlines, members, scheduled reviews, documentation,
-- recommendations and their outcomes, alert overrides and the CMR's action plan. Every column comes from an event
-- (times are the events' times), so a rebuild from the log gives these rows. Tables written by different
-- consumers are keyed so that the order in which those consumers apply their events does not matter.

-- Several tasks may now review the same event (a CMR offer and the first quarterly TMR of one enrolment).
ALTER TABLE review_tasks DROP CONSTRAINT review_tasks_focus_event_id_key;
ALTER TABLE review_tasks
    ADD COLUMN reason           text NOT NULL DEFAULT 'post-discharge-review',
    ADD COLUMN trigger          text,
    ADD COLUMN due              timestamptz,
    ADD COLUMN created_event_id uuid,
    ADD COLUMN overdue_at       timestamptz,  -- ReviewTaskOverdue: the deadline passed (priority escalated)
    ADD COLUMN service          text,         -- 'cmr' / 'tmr': what the completed review counts as for CMS
    ADD COLUMN performed_on     date;         -- the documented date of the review
CREATE INDEX review_tasks_worklist ON review_tasks (status, priority, due) WHERE status <> 'completed';
CREATE INDEX review_tasks_due ON review_tasks (due) WHERE status <> 'completed' AND overdue_at IS NULL;

-- Members of the MTM program (MtmEnrolled, MtmDisenrolled, in log order on one consumer).
CREATE TABLE members (
    patient_id      text        PRIMARY KEY,
    enrolled        boolean     NOT NULL,
    enrolled_on     date,
    disenrolled_on  date,
    changed_at      timestamptz NOT NULL
);

-- Reviews that open at a time: the CMR offer and the yearly CMR, quarterly TMRs, adherence and follow-up TMRs.
CREATE TABLE review_schedule (
    schedule_id     uuid        PRIMARY KEY,
    patient_id      text        NOT NULL,
    correlation_id  uuid        NOT NULL,
    cause_event_id  uuid        NOT NULL,
    service         text        NOT NULL CHECK (service IN ('cmr', 'tmr')),
    trigger         text        NOT NULL,
    opens_at        timestamptz NOT NULL,
    due             timestamptz NOT NULL,
    handled_at      timestamptz,               -- ReviewTaskCreated or ScheduledReviewSkipped for it
    task_id         uuid,
    skipped         text
);
CREATE INDEX review_schedule_pending ON review_schedule (opens_at) WHERE handled_at IS NULL;

-- Drug therapy problems (FHIR DetectedIssue) documented at completion.
CREATE TABLE problems (
    problem_id      uuid        PRIMARY KEY,
    task_id         uuid        NOT NULL,
    patient_id      text        NOT NULL,
    rule_id         text,
    problem         json        NOT NULL,      -- the DrugTherapyProblem as documented
    recorded_at     timestamptz NOT NULL
);
CREATE INDEX problems_rule ON problems (rule_id) WHERE rule_id IS NOT NULL;

-- Recommendations of completed reviews; outcomes come from the pharmacist or, for the prescriber's, referral.
CREATE TABLE recommendations (
    recommendation_id uuid        PRIMARY KEY,
    task_id           uuid        NOT NULL,
    patient_id        text        NOT NULL,
    problem_id        uuid,
    recommendation    json        NOT NULL,
    recorded_at       timestamptz NOT NULL,
    outcome           text,                    -- RecommendationOutcomeRecorded (the pharmacist's record)
    outcome_note      text,
    outcome_at        timestamptz
);
CREATE INDEX recommendations_patient ON recommendations (patient_id);

-- Referrals of recommendations and the prescribers' answers (ReferralRequested, ReferralAnswered: one consumer).
CREATE TABLE referral_outcomes (
    referral_id       uuid        PRIMARY KEY,
    recommendation_id uuid        NOT NULL,
    patient_id        text        NOT NULL,
    physician_id      text        NOT NULL,
    requested_at      timestamptz NOT NULL,
    decision          text,
    note              text,
    answered_at       timestamptz
);
CREATE INDEX referral_outcomes_recommendation ON referral_outcomes (recommendation_id);

CREATE TABLE follow_ups (
    follow_up_id    uuid        PRIMARY KEY,
    task_id         uuid        NOT NULL,
    patient_id      text        NOT NULL,
    due             timestamptz NOT NULL,
    reason          text        NOT NULL,
    scheduled_at    timestamptz NOT NULL
);
CREATE INDEX follow_ups_patient ON follow_ups (patient_id);

CREATE TABLE alert_overrides (
    override_id     uuid        PRIMARY KEY,
    task_id         uuid        NOT NULL,
    patient_id      text        NOT NULL,
    alert_key       text        NOT NULL,      -- rule (or kind) and ingredients: the same alert on a later task
    rule_id         text,
    override        json        NOT NULL,      -- the AlertOverride
    overridden_at   timestamptz NOT NULL
);
CREATE INDEX alert_overrides_patient ON alert_overrides (patient_id, alert_key);

-- The written summary (MAP + PML) of each CMR, due within 14 days of it.
CREATE TABLE action_plans (
    task_id            uuid        PRIMARY KEY,
    patient_id         text        NOT NULL,
    correlation_id     uuid        NOT NULL,
    completed_event_id uuid        NOT NULL,
    performed_on       date        NOT NULL,
    due                timestamptz NOT NULL,
    delivered_on       date,
    delivery_method    text,
    overdue_at         timestamptz
);
CREATE INDEX action_plans_due ON action_plans (due) WHERE delivered_on IS NULL AND overdue_at IS NULL;

-- Follow-through of each referral: its deadline and escalations (ReferralRequested.respond_by, ReferralEscalated),
-- the physician's read receipt (ReferralAcknowledged) and notifications that could not be delivered
-- (NotificationFailed). Every column comes from an event, so a rebuild from the log gives these rows.

ALTER TABLE referrals
    ADD COLUMN respond_by        timestamptz,
    ADD COLUMN escalate_at       timestamptz, -- when the next escalation is due (none after the last)
    ADD COLUMN escalations       integer     NOT NULL DEFAULT 0,
    ADD COLUMN last_escalated_at timestamptz,
    ADD COLUMN acknowledged_at   timestamptz,
    ADD COLUMN acknowledged_by   text;

CREATE INDEX referrals_escalation_due ON referrals (escalate_at) WHERE status = 'requested';

CREATE TABLE referral_notification_failures (
    notification_id uuid        PRIMARY KEY,
    referral_id     uuid        NOT NULL,
    channel         text        NOT NULL,
    attempts        integer     NOT NULL,
    reason          text,
    failed_at       timestamptz NOT NULL
);

CREATE INDEX referral_notification_failures_referral ON referral_notification_failures (referral_id);

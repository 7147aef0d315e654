-- Reminders: an unanswered referral that escalated (ReferralEscalated) is delivered again, once per escalation,
-- as its own notification (NotificationRequested with purpose 'reminder' and the escalation's number).

ALTER TABLE notifications
    ADD COLUMN purpose    text    NOT NULL DEFAULT 'referral' CHECK (purpose IN ('referral', 'reminder')),
    ADD COLUMN escalation integer NOT NULL DEFAULT 0;

ALTER TABLE notifications DROP CONSTRAINT notifications_referral_id_channel_key;
ALTER TABLE notifications ADD CONSTRAINT notifications_once_per_escalation UNIQUE (referral_id, channel, escalation);

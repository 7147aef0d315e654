-- Notifications (FHIR Communication) per referral and channel, and every delivery attempt: a projection of
-- ReferralRequested, NotificationRequested, NotificationRetryScheduled, NotificationDelivered and
-- NotificationFailed. Every column comes from an event, so a rebuild gives these rows and sends nothing.

CREATE TABLE referral_requests (
    referral_id uuid PRIMARY KEY,
    patient_id  text NOT NULL,
    event       json NOT NULL -- ReferralRequested as published: what the physician receives is built from it
);

CREATE TABLE notifications (
    notification_id uuid        PRIMARY KEY,
    referral_id     uuid        NOT NULL,
    patient_id      text        NOT NULL,
    correlation_id  uuid        NOT NULL,
    cause_event_id  uuid        NOT NULL, -- the NotificationRequested event
    recipient_id    text        NOT NULL,
    channel         text        NOT NULL CHECK (channel IN ('webhook', 'nats', 'email')),
    status          text        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    last_error      text,
    requested_at    timestamptz NOT NULL,
    finished_at     timestamptz,
    UNIQUE (referral_id, channel)
);

CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';

CREATE TABLE notification_attempts (
    notification_id uuid        NOT NULL REFERENCES notifications (notification_id),
    attempt         integer     NOT NULL,
    started_at      timestamptz,
    finished_at     timestamptz NOT NULL,
    outcome         text        NOT NULL CHECK (outcome IN ('retry', 'delivered', 'failed')),
    status_code     integer,
    detail          text,
    PRIMARY KEY (notification_id, attempt)
);

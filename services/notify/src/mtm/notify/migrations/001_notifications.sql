-- Notifications (FHIR Communication) per referral and channel, every delivery attempt, and where to deliver.

CREATE TABLE notifications (
    notification_id uuid        PRIMARY KEY,
    referral_id     uuid        NOT NULL,
    patient_id      text        NOT NULL,
    correlation_id  uuid        NOT NULL,
    cause_event_id  uuid        NOT NULL,
    recipient_id    text        NOT NULL,
    channel         text        NOT NULL CHECK (channel IN ('webhook', 'nats', 'email')),
    status          text        NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    payload         bytea       NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (referral_id, channel)
);

CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';

CREATE TABLE notification_attempts (
    notification_id uuid        NOT NULL REFERENCES notifications (notification_id),
    attempt         integer     NOT NULL,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    outcome         text,
    status_code     integer,
    detail          text,
    PRIMARY KEY (notification_id, attempt)
);

CREATE TABLE recipient_endpoints (
    recipient_id text PRIMARY KEY,
    webhook_url  text,
    email        text
);

-- notify's own bookkeeping, outside the projection: where physicians receive webhooks (configuration), and
-- which notification a delivery worker is attempting right now (so two workers never attempt the same one).

CREATE TABLE recipient_endpoints (
    recipient_id text PRIMARY KEY,
    webhook_url  text,
    email        text
);

CREATE TABLE notification_leases (
    notification_id uuid        PRIMARY KEY,
    leased_until    timestamptz NOT NULL
);

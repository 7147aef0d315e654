-- Outbox rows the log cannot take (larger than the server's max payload), kept with the reason instead of
-- blocking every later event of the service; an operator decides what to do with them.

CREATE TABLE outbox_parked (
    id         bigint      PRIMARY KEY,
    subject    text        NOT NULL,
    msg_id     text        NOT NULL,
    payload    bytea       NOT NULL,
    reason     text        NOT NULL,
    created_at timestamptz NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now()
);

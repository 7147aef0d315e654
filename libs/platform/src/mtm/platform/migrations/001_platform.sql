-- Tables every service has: the inbox that makes redelivery harmless, and the transactional outbox.

CREATE TABLE processed_messages (
    consumer   text   NOT NULL,
    stream_seq bigint NOT NULL,
    PRIMARY KEY (consumer, stream_seq)
);

CREATE TABLE outbox (
    id         bigserial   PRIMARY KEY,
    subject    text        NOT NULL,
    msg_id     text        NOT NULL,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

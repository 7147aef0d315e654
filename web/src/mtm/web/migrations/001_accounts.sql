-- The web app's own database (mtm_web): accounts, sessions and failed sign-ins. Nothing clinical lives here.

CREATE TABLE accounts (
    user_id         text        PRIMARY KEY,
    role            text        NOT NULL CHECK (role IN ('pharmacist', 'physician', 'admin')),
    practitioner_id text,
    password_hash   text,                 -- argon2id; NULL for an account that signs in only through SSO
    disabled        boolean     NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (role <> 'physician' OR practitioner_id IS NOT NULL)
);

CREATE TABLE sessions (
    session_hash bytea       PRIMARY KEY, -- SHA-256 of the random session id the signed cookie carries
    user_id      text        NOT NULL REFERENCES accounts (user_id) ON DELETE CASCADE,
    csrf_token   text        NOT NULL,
    via          text        NOT NULL CHECK (via IN ('password', 'oidc')),
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);

CREATE INDEX sessions_expiry ON sessions (expires_at);

CREATE TABLE login_failures (
    key       text        NOT NULL, -- 'user:<sha256 of the name>' or 'ip:<address>'
    failed_at timestamptz NOT NULL
);

CREATE INDEX login_failures_key ON login_failures (key, failed_at);

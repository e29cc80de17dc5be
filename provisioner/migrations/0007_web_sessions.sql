-- Operators signed in to the status pages with an admin token: the cookie's value is never
-- stored, only its hash; a session lasts until it expires or its operator signs out.
CREATE TABLE web_sessions (
    hash           TEXT    NOT NULL PRIMARY KEY,
    token_name     TEXT    NOT NULL REFERENCES admin_tokens (name) ON DELETE CASCADE,
    created_at_ms  BIGINT  NOT NULL,
    expires_at_ms  BIGINT  NOT NULL
);
CREATE INDEX web_sessions_expiry ON web_sessions (expires_at_ms);

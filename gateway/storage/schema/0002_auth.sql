-- User-interactive auth sessions, registration tokens and single-use login tokens.
-- All in the database so that a restart (or a second process) does not lose them.
CREATE TABLE ui_auth_sessions (
    session_id TEXT PRIMARY KEY,
    created_ts BIGINT NOT NULL,
    user_id TEXT,
    request_key TEXT NOT NULL,
    completed TEXT NOT NULL DEFAULT '[]'
);

CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed INTEGER,
    pending INTEGER NOT NULL DEFAULT 0,
    completed INTEGER NOT NULL DEFAULT 0,
    expiry_time BIGINT
);

CREATE TABLE login_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expiry_ts BIGINT NOT NULL,
    used_ts BIGINT,
    auth_provider_id TEXT,
    auth_provider_session_id TEXT
);
CREATE INDEX login_tokens_expiry ON login_tokens (expiry_ts);

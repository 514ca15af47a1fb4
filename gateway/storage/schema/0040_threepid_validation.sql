-- (user_threepids, the addresses on accounts, is the porting migration's: Synapse's columns.)

-- The identity servers a user's addresses were bound at through us (unbound on removal).
CREATE TABLE user_threepid_id_servers (
    user_id TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    id_server TEXT NOT NULL,
    PRIMARY KEY (user_id, medium, address, id_server)
);

-- Address validation (requestToken): the mailed token is stored as a SHA-256 hash. purpose
-- is what the validated address may be used for: registration, add_threepid, password_reset.
CREATE TABLE threepid_validation_sessions (
    session_id TEXT PRIMARY KEY,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    client_secret TEXT NOT NULL,
    purpose TEXT NOT NULL,
    last_send_attempt BIGINT NOT NULL,
    token_hash TEXT NOT NULL,
    token_expires_ts BIGINT NOT NULL,
    next_link TEXT,
    created_ts BIGINT NOT NULL,
    validated_at BIGINT,
    -- The user-interactive auth session that used it (m.login.email.identity).
    uia_session_id TEXT
);
CREATE INDEX threepid_validation_lookup ON threepid_validation_sessions (client_secret, medium, address, purpose);
CREATE INDEX threepid_validation_uia ON threepid_validation_sessions (uia_session_id);

-- Mail waiting to be sent or retried: a request never waits for the SMTP server.
CREATE TABLE email_outbox (
    mail_id TEXT PRIMARY KEY,
    recipient TEXT NOT NULL,
    message TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ts BIGINT NOT NULL,
    last_error TEXT
);
CREATE INDEX email_outbox_due ON email_outbox (next_attempt_ts);

-- The OAuth 2.0 API (gateway/oauth/): everything between two requests lives here, so a
-- restart or a second process loses no client, grant, session or token.

-- Dynamically registered clients (static ones come from the config). ``metadata`` is the
-- registered client metadata (JSON), as the registration endpoint answered it.
CREATE TABLE oauth_clients (
    client_id TEXT PRIMARY KEY,
    metadata TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);

-- A browser signed in on our pages (login, consent, account management): the hash of its
-- cookie, the user, and how they signed in (an IdP ID and the IdP's session, e.g. an OIDC
-- ``sid``, for back-channel logout; NULL for a password).
CREATE TABLE oauth_browser_sessions (
    session_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    idp_id TEXT,
    idp_session_id TEXT,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX oauth_browser_sessions_user ON oauth_browser_sessions (user_id);

-- One row per authorisation: an authorisation code request (kind 'code', bound to the
-- browser that made it) or a device authorisation (kind 'device', RFC 8628). ``status``:
-- pending -> approved (the code is issued / the device may collect) -> exchanged; or denied.
CREATE TABLE oauth_grants (
    grant_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    device_id TEXT NOT NULL,
    redirect_uri TEXT,
    response_mode TEXT,
    state TEXT,
    nonce TEXT,
    code_challenge TEXT,
    prompt TEXT,
    browser_key_hash TEXT,
    user_code TEXT,
    device_code_hash TEXT,
    code_hash TEXT,
    user_id TEXT,
    auth_time BIGINT,
    idp_id TEXT,
    idp_session_id TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    session_id TEXT,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL,
    last_poll_ts BIGINT
);
CREATE UNIQUE INDEX oauth_grants_code ON oauth_grants (code_hash);
CREATE UNIQUE INDEX oauth_grants_device_code ON oauth_grants (device_code_hash);
CREATE UNIQUE INDEX oauth_grants_user_code ON oauth_grants (user_code);
CREATE INDEX oauth_grants_expiry ON oauth_grants (expires_ts);

-- A client's session for one user and device: what its access and refresh tokens belong to.
CREATE TABLE oauth_sessions (
    session_id TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    finished_ts BIGINT
);
CREATE INDEX oauth_sessions_device ON oauth_sessions (user_id, device_id);

-- Refresh tokens (hashed) with the access token issued beside each. A refresh makes a
-- successor (``next_token_hash``) and marks the old one consumed: it still works for a retry
-- until the successor's access token is used (spec: "Refresh token grant").
CREATE TABLE oauth_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id TEXT NOT NULL,
    access_token_hash TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    consumed_ts BIGINT,
    next_token_hash TEXT
);
CREATE INDEX oauth_refresh_tokens_session ON oauth_refresh_tokens (session_id);
CREATE INDEX oauth_refresh_tokens_access ON oauth_refresh_tokens (access_token_hash);

-- Access tokens issued by the OAuth 2.0 API name their session, and remember their first use.
ALTER TABLE access_tokens ADD COLUMN oauth_session_id TEXT;
ALTER TABLE access_tokens ADD COLUMN first_used_ts BIGINT;
CREATE INDEX access_tokens_oauth_session ON access_tokens (oauth_session_id);

-- The RS256 key that signs id_tokens (its public half is the JWKS).
CREATE TABLE oauth_signing_keys (
    kid TEXT PRIMARY KEY,
    private_key_pem TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);

-- A user allowed the replacement of their cross-signing keys (the m.oauth UI-auth stage)
-- on the account page, until this time.
CREATE TABLE oauth_cross_signing_reset (
    user_id TEXT PRIMARY KEY,
    allowed_until_ts BIGINT NOT NULL
);

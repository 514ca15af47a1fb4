-- Single sign-on: everything a browser login needs between two requests lives here,
-- never in a process's memory, so a restart (or a second process) does not break it.

-- One row per login attempt sent to an identity provider (OIDC today; SAML/CAS later).
-- ``session_id`` is the OAuth2 ``state`` sent to the IdP; ``browser_key_hash`` binds it to
-- the cookie set in the browser that started the login. ``used_ts`` makes callbacks single use.
CREATE TABLE sso_login_sessions (
    session_id TEXT PRIMARY KEY,
    idp_id TEXT NOT NULL,
    browser_key_hash TEXT NOT NULL,
    client_redirect_url TEXT NOT NULL,
    ui_auth_session_id TEXT,
    nonce TEXT,
    code_verifier TEXT,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL,
    used_ts BIGINT
);
CREATE INDEX sso_login_sessions_expiry ON sso_login_sessions (expires_ts);

-- A new user who still has to pick a username (or accept the terms) after the IdP.
CREATE TABLE sso_pending_registrations (
    session_id TEXT PRIMARY KEY,
    idp_id TEXT NOT NULL,
    remote_user_id TEXT NOT NULL,
    attributes TEXT NOT NULL,
    client_redirect_url TEXT NOT NULL,
    auth_provider_session_id TEXT,
    chosen_localpart TEXT,
    use_display_name BOOLEAN NOT NULL DEFAULT TRUE,
    use_avatar BOOLEAN NOT NULL DEFAULT TRUE,
    emails_to_use TEXT NOT NULL DEFAULT '[]',
    terms_accepted_version TEXT,
    created_ts BIGINT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX sso_pending_registrations_expiry ON sso_pending_registrations (expires_ts);

-- Which local user an identity at an IdP is: (auth_provider, external_id) -> user_id.
CREATE TABLE user_external_ids (
    auth_provider TEXT NOT NULL,
    external_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    PRIMARY KEY (auth_provider, external_id)
);
CREATE INDEX user_external_ids_user ON user_external_ids (user_id);

-- Refresh tokens of the legacy API (spec "Refreshing access tokens"; the OAuth 2.0 API's
-- are in oauth_refresh_tokens). Stored as SHA-256 hashes. A refresh replaces a token by
-- its successor (next_token_hash); the predecessor (and the access token issued with it)
-- is deleted once the successor's access token or the successor itself is used.
CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    access_token_hash TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    expiry_ts BIGINT,
    -- When the login ends however often it is refreshed (session_lifetime), carried over.
    session_expiry_ts BIGINT,
    next_token_hash TEXT
);
CREATE INDEX refresh_tokens_device ON refresh_tokens (user_id, device_id);
CREATE INDEX refresh_tokens_next ON refresh_tokens (next_token_hash);

-- The refresh token an access token was issued with (legacy API); its first use ends the
-- predecessor pair. first_used_ts (from the OAuth migration) records that use.
ALTER TABLE access_tokens ADD COLUMN refresh_token_hash TEXT;

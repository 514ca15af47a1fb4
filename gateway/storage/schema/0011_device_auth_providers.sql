-- Which identity-provider session a device was logged in through (the login token's
-- auth_provider_id / auth_provider_session_id, e.g. an OIDC id_token's ``sid``), so that an
-- OIDC back-channel logout can find and log out exactly those devices (Synapse's table name).
CREATE TABLE device_auth_providers (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    auth_provider_id TEXT NOT NULL,
    auth_provider_session_id TEXT NOT NULL
);
CREATE INDEX device_auth_providers_session ON device_auth_providers (auth_provider_id, auth_provider_session_id);
CREATE INDEX device_auth_providers_device ON device_auth_providers (user_id, device_id);

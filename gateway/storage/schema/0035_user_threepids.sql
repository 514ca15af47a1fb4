-- Third-party identifiers (email addresses, phone numbers) bound to local accounts, with
-- Synapse's column names: brought over by `gateway import-synapse` (and kept for the 3PID
-- endpoints and admin API). Times are milliseconds.
CREATE TABLE user_threepids (
    user_id TEXT NOT NULL,
    medium TEXT NOT NULL,
    address TEXT NOT NULL,
    validated_at BIGINT NOT NULL,
    added_at BIGINT NOT NULL,
    PRIMARY KEY (medium, address)
);
CREATE INDEX user_threepids_user ON user_threepids (user_id);

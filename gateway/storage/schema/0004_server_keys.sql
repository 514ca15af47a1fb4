-- Other servers' signing keys, as fetched (directly or through a notary), with the
-- signed response they came in so that we can serve them again as a notary.
CREATE TABLE server_keys (
    server_name TEXT NOT NULL,
    key_id TEXT NOT NULL,
    verify_key TEXT NOT NULL,
    valid_until_ts BIGINT NOT NULL,
    expired_ts BIGINT,
    fetched_ts BIGINT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

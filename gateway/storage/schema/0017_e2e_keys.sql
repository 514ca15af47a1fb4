-- End-to-end encryption plumbing: device keys, one-time and fallback keys, cross-signing
-- keys and their signatures, the device list stream, to-device inboxes, key backup.
-- The server stores and forwards keys; it never decrypts anything.
-- Spec: https://spec.matrix.org/latest/client-server-api/#end-to-end-encryption
INSERT INTO stream_positions (stream_name, position) VALUES ('to_device', 0);
INSERT INTO stream_positions (stream_name, position) VALUES ('device_lists', 0);

-- Device keys (the signed JSON as uploaded) of local devices and, as a cache, of remote
-- ones (display_name only for remote devices: local names live in devices).
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT,
    display_name TEXT,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys: each is claimed (deleted) exactly once.
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- One fallback key per (device, algorithm); 'used' once claimed (it stays claimable).
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys ('master', 'self_signing', 'user_signing'), local and remote.
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded with /keys/signatures/upload, merged into /keys/query answers.
-- target_key_id is a device ID or a cross-signing public key.
CREATE TABLE e2e_signatures (
    target_user_id TEXT NOT NULL,
    target_key_id TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- The device list stream: a row per change of a user's devices or cross-signing keys
-- (device_id '' for cross-signing). Local users' rows are what m.device_list_update's
-- stream_id / prev_id count; remote users' rows tell local clients to query again.
CREATE TABLE device_lists_stream (
    stream_id BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL
);
CREATE INDEX device_lists_stream_id ON device_lists_stream (stream_id);
CREATE INDEX device_lists_stream_user ON device_lists_stream (user_id, stream_id);

-- Remote users whose device list we cache (while they share a room with a local user),
-- with the last stream_id of theirs we applied (NULL: filled from /user/keys/query).
CREATE TABLE device_lists_remote_cache (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT
);

-- To-device messages waiting for a local device (deleted once the client acknowledges
-- them by syncing with a later token).
CREATE TABLE device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    message_json TEXT NOT NULL
);
CREATE INDEX device_inbox_device ON device_inbox (user_id, device_id, stream_id);

-- Transactions already accepted: /sendToDevice per (user, device, txn ID), federated
-- m.direct_to_device per (origin server, '', message_id).
CREATE TABLE device_message_txns (
    sender TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (sender, device_id, txn_id)
);

-- Server-side key backup: versions and the room keys in them.
CREATE TABLE e2e_room_keys_versions (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    algorithm TEXT NOT NULL,
    auth_data TEXT NOT NULL,
    etag BIGINT NOT NULL DEFAULT 0,
    deleted BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE e2e_room_keys (
    user_id TEXT NOT NULL,
    version BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    first_message_index BIGINT NOT NULL,
    forwarded_count BIGINT NOT NULL,
    is_verified BOOLEAN NOT NULL,
    session_data TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

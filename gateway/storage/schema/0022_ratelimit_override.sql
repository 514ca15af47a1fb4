-- Per-user overrides of the message rate limit (Synapse's admin API
-- /_synapse/admin/v1/users/{user_id}/override_ratelimit); 0 and 0 mean no limit.
CREATE TABLE ratelimit_override (
    user_id TEXT PRIMARY KEY,
    messages_per_second BIGINT NOT NULL,
    burst_count BIGINT NOT NULL
);

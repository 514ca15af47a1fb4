-- Where and with which client each device used its access tokens (GET /admin/whois, the
-- admin API's whois, the devices' last_seen_*): one row per user, device, IP address and
-- user agent, its last_seen refreshed at most every few minutes. Rows of a deleted device
-- go with it; rows older than the retention are dropped as the user's new ones arrive.
CREATE TABLE client_ips (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    last_seen BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, ip, user_agent)
);

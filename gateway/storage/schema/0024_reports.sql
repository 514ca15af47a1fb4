-- Reports of events, rooms and users by local users (Synapse's event_reports,
-- room_reports and user_reports), read by admins through /_synapse/admin/v1/*_reports.
-- IDs come from stream_positions counters (the same on both engines).
CREATE TABLE event_reports (
    id BIGINT PRIMARY KEY,
    received_ts BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT,
    score BIGINT
);
CREATE INDEX event_reports_received ON event_reports (received_ts);

CREATE TABLE room_reports (
    id BIGINT PRIMARY KEY,
    received_ts BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX room_reports_received ON room_reports (received_ts);

CREATE TABLE user_reports (
    id BIGINT PRIMARY KEY,
    received_ts BIGINT NOT NULL,
    target_user_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX user_reports_received ON user_reports (received_ts);

INSERT INTO stream_positions (stream_name, position) VALUES ('event_reports', 0);
INSERT INTO stream_positions (stream_name, position) VALUES ('room_reports', 0);
INSERT INTO stream_positions (stream_name, position) VALUES ('user_reports', 0);

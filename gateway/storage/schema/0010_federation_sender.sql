-- The federation sender: which remote servers we send to, their retry state, and how
-- far each has received the events of each room (so that nothing acknowledged is lost
-- across restarts and outages). Names and meanings as in Synapse's ``destinations`` and
-- ``destination_rooms`` (its admin API shows them).

-- One row per remote server we send to.
-- retry_last_ts: when we last failed to reach it (0 once it answers again);
-- retry_interval: how long after that we wait before trying again (0: not backing off);
-- failure_ts: when the current run of failures began (NULL while it answers);
-- last_successful_stream_ordering: every event for it up to this events-stream position
-- has been sent (or deliberately skipped by catch-up); NULL before the first success.
CREATE TABLE destinations (
    destination TEXT PRIMARY KEY,
    retry_last_ts BIGINT NOT NULL DEFAULT 0,
    retry_interval BIGINT NOT NULL DEFAULT 0,
    failure_ts BIGINT,
    last_successful_stream_ordering BIGINT
);

-- Per server and room: the position of the newest event of ours in that room that is for
-- that server. A row newer than the server's last_successful_stream_ordering means the
-- server still has to receive something in that room (catch-up).
CREATE TABLE destination_rooms (
    destination TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (destination, room_id)
);
CREATE INDEX destination_rooms_room ON destination_rooms (room_id);

-- How far the sender has worked out the destinations of new events (one row). Starts at
-- the current events position: events stored before this migration are not sent.
CREATE TABLE federation_sender_position (
    lock CHAR(1) NOT NULL DEFAULT 'X' UNIQUE,
    stream_ordering BIGINT NOT NULL
);
INSERT INTO federation_sender_position (lock, stream_ordering)
    SELECT 'X', position FROM stream_positions WHERE stream_name = 'events';

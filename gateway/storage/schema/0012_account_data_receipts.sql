-- Account data (global and per room, room tags included as per-room 'm.tag') and
-- receipts, each with a position in its own stream so that /sync can ask "what changed
-- since". Positions come from stream_positions like the events stream (taken inside the
-- writing transaction, so they become visible in order).
INSERT INTO stream_positions (stream_name, position) VALUES ('account_data', 0);
INSERT INTO stream_positions (stream_name, position) VALUES ('receipts', 0);

-- room_id is '' for global account data.
CREATE TABLE account_data (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    content TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_user_stream ON account_data (user_id, stream_id);

-- The latest receipt of each (room, type, user, thread); thread_id is '' for an
-- unthreaded receipt. event_stream_ordering is the position of the receipted event
-- (unread counts are what comes after it).
CREATE TABLE receipts (
    room_id TEXT NOT NULL,
    receipt_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_stream_ordering BIGINT,
    data TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_id);
CREATE INDEX receipts_user ON receipts (user_id, room_id);

-- Rooms joined with partial state (send_join v2 with omit_members, answered with
-- members_omitted): the member events are still being fetched by the background resync
-- (gateway/services/partial_state.py). A row means "not fully joined yet"; it goes in
-- the transaction that gives the room its full state.
CREATE TABLE partial_state_rooms (
    room_id TEXT PRIMARY KEY,
    join_event_id TEXT NOT NULL,
    joined_via TEXT NOT NULL,
    started_ts BIGINT NOT NULL
);

-- send_join's servers_in_room (the servers to fetch the full state from), in order.
CREATE TABLE partial_state_room_servers (
    room_id TEXT NOT NULL,
    server_name TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    PRIMARY KEY (room_id, server_name)
);

-- The events position at which the room got its full state after a partial join: /sync
-- sends such a room's state in full again to clients whose token is older.
ALTER TABLE rooms ADD COLUMN full_state_stream_ordering BIGINT;

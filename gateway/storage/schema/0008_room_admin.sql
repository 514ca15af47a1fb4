-- Room administration (Synapse's admin API: block, delete/purge).

-- Rooms local users may not join (or be invited into). A room can be blocked before this
-- server knows it; the row outlives a purge of the room.
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    blocked_ts BIGINT NOT NULL
);

-- Room deletions (DELETE /_synapse/admin/v2/rooms/{roomId}), kept so that their status can be
-- asked for after they finished; ``result`` is the JSON of ``shutdown_room``.
CREATE TABLE room_delete_tasks (
    delete_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    result TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);
CREATE INDEX room_delete_tasks_room ON room_delete_tasks (room_id);

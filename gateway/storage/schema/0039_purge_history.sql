-- History purges (POST /_synapse/admin/v1/purge_history/{roomId}), kept so that their status
-- can be asked for (GET /_synapse/admin/v1/purge_history_status/{purgeId}) for a day.
CREATE TABLE purge_history_tasks (
    purge_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created_ts BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);

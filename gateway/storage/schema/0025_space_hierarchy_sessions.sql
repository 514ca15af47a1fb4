-- GET /_matrix/client/v1/rooms/{roomId}/hierarchy pages: the ``next_batch`` token names a
-- row holding the rest of the walk (the rooms still to visit, those visited) for the user
-- who asked, with the parameters that may not change between pages. Rows expire after a
-- few minutes and are dropped as new ones are written.
CREATE TABLE space_hierarchy_sessions (
    token TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    suggested_only BOOLEAN NOT NULL,
    max_depth BIGINT NOT NULL,
    walk TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX space_hierarchy_sessions_expiry ON space_hierarchy_sessions (expires_ts);

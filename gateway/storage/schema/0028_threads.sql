-- Threads by latest activity (/threads): one row per thread root with the stream position
-- of its newest counted reply, kept as replies are stored (and redacted), so a page of
-- threads is an index range, not a grouping of every reply in the room.
-- https://spec.matrix.org/latest/client-server-api/#querying-threads-in-a-room
CREATE TABLE threads (
    room_id TEXT NOT NULL,
    root_id TEXT NOT NULL,
    latest_position BIGINT NOT NULL,
    PRIMARY KEY (room_id, root_id)
);
CREATE INDEX threads_latest ON threads (room_id, latest_position);

INSERT INTO threads (room_id, root_id, latest_position)
SELECT r.room_id, r.relates_to_id, MAX(e.stream_ordering)
FROM event_relations r JOIN events e ON e.event_id = r.event_id
WHERE r.rel_type = 'm.thread' AND e.outlier = FALSE AND e.rejected_reason IS NULL AND e.soft_failed = FALSE
  AND NOT EXISTS (SELECT 1 FROM redactions rd WHERE rd.redacts = r.event_id)
GROUP BY r.room_id, r.relates_to_id;

-- The room index served the grouping above; it also made SQLite (which has no
-- statistics) walk every relation of a room for the children of one event.
DROP INDEX event_relations_room;

-- /messages pages through a room in topological order: by depth, ties by stream
-- position (the spec's "Syncing" and "Backfilling" sections; backfilled events, with
-- their decreasing positions, fall into place by depth). The index serves the range
-- scans of that order and, through its prefix, what the (room_id, depth) index did.
DROP INDEX IF EXISTS events_room_depth;
CREATE INDEX events_room_topological ON events (room_id, depth, stream_ordering);

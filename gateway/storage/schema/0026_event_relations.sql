-- Relationships between events (m.relates_to with a rel_type): one row per child event,
-- written when the event is stored (local, received, outlier or backfilled; not when
-- rejected). Whether a child counts is decided when reading: it must be in the room's
-- timeline (not an outlier, rejected or soft-failed) and not redacted.
-- https://spec.matrix.org/latest/client-server-api/#forming-relationships-between-events
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    sender TEXT NOT NULL,
    aggregation_key TEXT
);
CREATE INDEX event_relations_parent ON event_relations (relates_to_id, rel_type);
CREATE INDEX event_relations_room ON event_relations (room_id, rel_type);

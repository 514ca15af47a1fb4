-- Server-side search (POST /search, room_events): one row per searchable event, with
-- the searched key's text as a tsvector (English configuration: stemming, stop words)
-- under a GIN index. Rows are written with the event (gateway/storage/search.py) for
-- timeline events only (not outliers, rejected or soft-failed events) and deleted when
-- a redaction applies. SQLite keeps the same rows in an FTS5 table instead.
CREATE TABLE event_search (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    -- content.body (m.room.message), content.name (m.room.name), content.topic (m.room.topic)
    key TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    vector TSVECTOR NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
CREATE INDEX event_search_stream ON event_search (stream_ordering);
CREATE INDEX event_search_room_stream ON event_search (room_id, stream_ordering);

-- Which searched events a user may see follows their membership and the room's history
-- visibility over time: read from current_state_deltas by key.
CREATE INDEX current_state_deltas_key ON current_state_deltas (room_id, type, state_key, stream_ordering);

-- Messages, names and topics stored before this migration. Events whose JSON holds a
-- \u0000 escape (which jsonb refuses) are skipped; NUL and the highlight markers (\x02,
-- \x03) are taken out of the text, as the live indexer does.
INSERT INTO event_search (event_id, room_id, sender, key, stream_ordering, vector)
SELECT e.event_id, e.room_id, e.sender, k.key, e.stream_ordering,
       to_tsvector('english', translate(k.value, E'\x02\x03', ''))
FROM (
    SELECT event_id, room_id, sender, type, stream_ordering, json FROM events ev
    WHERE type IN ('m.room.message', 'm.room.name', 'm.room.topic')
      AND outlier = FALSE AND rejected_reason IS NULL AND soft_failed = FALSE
      AND (type = 'm.room.message' OR state_key = '')
      AND strpos(json, '\u0000') = 0
      AND NOT EXISTS (SELECT 1 FROM redactions r WHERE r.redacts = ev.event_id)
    OFFSET 0
) e
CROSS JOIN LATERAL (SELECT e.json::jsonb -> 'content' AS c) j
CROSS JOIN LATERAL (
    SELECT 'content.body' AS key, j.c ->> 'body' AS value
    WHERE e.type = 'm.room.message' AND jsonb_typeof(j.c -> 'body') = 'string'
    UNION ALL
    SELECT 'content.name', j.c ->> 'name'
    WHERE e.type = 'm.room.name' AND jsonb_typeof(j.c -> 'name') = 'string'
    UNION ALL
    SELECT 'content.topic', concat_ws(' ',
        CASE WHEN jsonb_typeof(j.c -> 'topic') = 'string' THEN j.c ->> 'topic' END,
        (SELECT string_agg(b.block ->> 'body', ' ')
         FROM jsonb_array_elements(CASE WHEN jsonb_typeof(j.c -> 'm.topic' -> 'm.text') = 'array'
                                        THEN j.c -> 'm.topic' -> 'm.text' ELSE '[]'::jsonb END) AS b(block)
         WHERE jsonb_typeof(b.block) = 'object' AND jsonb_typeof(b.block -> 'body') = 'string'
           AND COALESCE(b.block ->> 'mimetype', 'text/plain') = 'text/plain'
           AND (b.block ->> 'body') IS DISTINCT FROM (CASE WHEN jsonb_typeof(j.c -> 'topic') = 'string'
                                                          THEN j.c ->> 'topic' END)))
    WHERE e.type = 'm.room.topic'
) k
WHERE k.value IS NOT NULL AND k.value <> '';

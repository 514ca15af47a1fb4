-- Server-side search (POST /search, room_events) on SQLite: an FTS5 table whose rowid is
-- the event's stream_ordering (unique; "recent" order and pagination follow it), with
-- the searched key's text in ``value`` (Porter stemming over unicode61 tokens, accents
-- folded), the room as one indexed token in ``room`` ('r', the room ID's UTF-8 in hex,
-- '0': one token that no stemming rule changes; a query names its rooms in the MATCH, so
-- FTS5 intersects doclists instead of reading every match's row; weight 0 in the
-- ranking) and the event's identity in unindexed columns.
-- Rows are written with the event (gateway/storage/search.py) for timeline events only
-- and deleted when a redaction applies. PostgreSQL keeps the same rows with a tsvector
-- under a GIN index instead.
CREATE VIRTUAL TABLE event_search USING fts5(
    value,
    room,
    event_id UNINDEXED,
    room_id UNINDEXED,
    sender UNINDEXED,
    key UNINDEXED,
    tokenize = 'porter unicode61 remove_diacritics 2'
);
INSERT INTO event_search (event_search, rank) VALUES ('rank', 'bm25(1.0, 0.0)');

-- Which searched events a user may see follows their membership and the room's history
-- visibility over time: read from current_state_deltas by key.
CREATE INDEX current_state_deltas_key ON current_state_deltas (room_id, type, state_key, stream_ordering);

-- Messages, names and topics stored before this migration (NUL and the highlight
-- markers \x02 and \x03 taken out of the text, as the live indexer does).
INSERT INTO event_search (rowid, value, room, event_id, room_id, sender, key)
SELECT stream_ordering, replace(replace(replace(value, char(0), ''), char(2), ''), char(3), ''),
       'r' || lower(hex(room_id)) || '0', event_id, room_id, sender, key
FROM (
    SELECT e.stream_ordering, e.event_id, e.room_id, e.sender,
        CASE e.type WHEN 'm.room.message' THEN 'content.body'
                    WHEN 'm.room.name' THEN 'content.name' ELSE 'content.topic' END AS key,
        CASE e.type
            WHEN 'm.room.message' THEN
                CASE WHEN json_type(e.json, '$.content.body') = 'text' THEN json_extract(e.json, '$.content.body') END
            WHEN 'm.room.name' THEN
                CASE WHEN json_type(e.json, '$.content.name') = 'text' THEN json_extract(e.json, '$.content.name') END
            ELSE trim(
                COALESCE(CASE WHEN json_type(e.json, '$.content.topic') = 'text'
                              THEN json_extract(e.json, '$.content.topic') END, '') || ' ' ||
                COALESCE((SELECT group_concat(json_extract(b.value, '$.body'), ' ')
                          FROM json_each(CASE WHEN json_type(e.json, '$.content."m.topic"."m.text"') = 'array'
                                              THEN json_extract(e.json, '$.content."m.topic"."m.text"')
                                              ELSE '[]' END) AS b
                          WHERE b.type = 'object' AND json_type(b.value, '$.body') = 'text'
                            AND COALESCE(json_extract(b.value, '$.mimetype'), 'text/plain') = 'text/plain'
                            AND json_extract(b.value, '$.body') IS NOT
                                (CASE WHEN json_type(e.json, '$.content.topic') = 'text'
                                      THEN json_extract(e.json, '$.content.topic') END)), ''))
        END AS value
    FROM events e
    WHERE e.type IN ('m.room.message', 'm.room.name', 'm.room.topic')
      AND (e.type = 'm.room.message' OR e.state_key = '')
      AND e.outlier = FALSE AND e.rejected_reason IS NULL AND e.soft_failed = FALSE
      AND NOT EXISTS (SELECT 1 FROM redactions r WHERE r.redacts = e.event_id)
)
WHERE value IS NOT NULL AND value <> '';

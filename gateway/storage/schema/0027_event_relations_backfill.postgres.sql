-- Rooms stored before event_relations (0026): their relations, read from the stored events (the
-- same rules as federation.relations.relation_of). Events whose JSON escapes NUL or a
-- surrogate are skipped: PostgreSQL text cannot hold them.
INSERT INTO event_relations (event_id, relates_to_id, rel_type, room_id, type, sender, aggregation_key)
SELECT event_id, parent, rel_type, room_id, type, sender,
       CASE WHEN rel_type = 'm.annotation' AND key_type = 'string'
                 AND octet_length(rel_key) BETWEEN 1 AND 1024 THEN rel_key END
FROM (
    SELECT event_id, room_id, type, sender,
           rel ->> 'rel_type' AS rel_type, json_typeof(rel -> 'rel_type') AS rel_type_type,
           rel ->> 'event_id' AS parent, json_typeof(rel -> 'event_id') AS parent_type,
           rel ->> 'key' AS rel_key, json_typeof(rel -> 'key') AS key_type
    FROM (
        SELECT event_id, room_id, type, sender, (json::json) -> 'content' -> 'm.relates_to' AS rel
        FROM events
        WHERE rejected_reason IS NULL AND json LIKE '%m.relates_to%'
          AND json !~* '\\u(0000|d[89a-f])'
        OFFSET 0  -- a fence: the filter above runs before any ->> below
    ) e
    WHERE json_typeof(rel) = 'object'
) r
WHERE rel_type_type = 'string' AND parent_type = 'string' AND left(parent, 1) = '$'
  AND octet_length(rel_type) BETWEEN 1 AND 255 AND octet_length(parent) <= 255;

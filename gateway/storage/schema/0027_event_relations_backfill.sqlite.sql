-- Rooms stored before event_relations (0026): their relations, read from the stored events (the
-- same rules as federation.relations.relation_of). Events whose JSON escapes NUL are
-- skipped (json_extract would cut such a string short).
INSERT INTO event_relations (event_id, relates_to_id, rel_type, room_id, type, sender, aggregation_key)
SELECT event_id, parent, rel_type, room_id, type, sender,
       CASE WHEN rel_type = 'm.annotation' AND key_type = 'text'
                 AND length(CAST(rel_key AS BLOB)) BETWEEN 1 AND 1024 THEN rel_key END
FROM (
    SELECT event_id, room_id, type, sender,
           json_extract(json, '$.content."m.relates_to".rel_type') AS rel_type,
           json_type(json, '$.content."m.relates_to".rel_type') AS rel_type_type,
           json_extract(json, '$.content."m.relates_to".event_id') AS parent,
           json_type(json, '$.content."m.relates_to".event_id') AS parent_type,
           json_extract(json, '$.content."m.relates_to".key') AS rel_key,
           json_type(json, '$.content."m.relates_to".key') AS key_type
    FROM events
    WHERE rejected_reason IS NULL AND json LIKE '%m.relates_to%' AND instr(json, '\u0000') = 0
      AND json_valid(json)
) r
WHERE rel_type_type = 'text' AND parent_type = 'text' AND substr(parent, 1, 1) = '$'
  AND length(CAST(rel_type AS BLOB)) BETWEEN 1 AND 255 AND length(CAST(parent AS BLOB)) <= 255;

-- Presence changes get positions in their own stream, so that /sync can send the
-- presence of the users a client shares rooms with when it changes.
ALTER TABLE presence ADD COLUMN stream_id BIGINT NOT NULL DEFAULT 0;
CREATE INDEX presence_stream ON presence (stream_id);
INSERT INTO stream_positions (stream_name, position) VALUES ('presence', 0);

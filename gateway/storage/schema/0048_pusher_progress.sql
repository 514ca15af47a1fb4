-- HTTP pushers' progress (as Synapse's pushers.last_stream_ordering): the stream position
-- of the last notification each pusher was sent. A pusher process that restarts, or was
-- down, pushes the notifications stored after it, and none twice. Existing pushers start
-- from the notifications stored so far (nothing old is pushed on upgrade).
ALTER TABLE pushers ADD COLUMN last_stream_ordering BIGINT NOT NULL DEFAULT 0;
UPDATE pushers SET last_stream_ordering = COALESCE((SELECT MAX(stream_ordering) FROM event_push_actions), 0);
-- A pusher reads its user's notifications after its position.
CREATE INDEX event_push_actions_user_stream ON event_push_actions (user_id, stream_ordering);

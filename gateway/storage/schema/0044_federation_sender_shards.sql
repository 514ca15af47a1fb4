-- How far each of several federation senders (``federation_sender_instances``) has worked
-- out the destinations of new events: each routes the same events to its own share of the
-- destinations. A single sender keeps using ``federation_sender_position``.
CREATE TABLE federation_sender_instance_positions (
    instance_name TEXT PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);

-- Device list and signing key updates for other servers are kept until a destination
-- took them, as to-device messages are: a sender that restarts (or another process that
-- made the update while the sender was away) loses none.
ALTER TABLE device_federation_outbox ADD COLUMN edu_type TEXT NOT NULL DEFAULT 'm.direct_to_device';

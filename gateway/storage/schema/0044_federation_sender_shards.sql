-- How far each of several federation senders (``federation_sender_instances``) has worked
-- out the destinations of new events: each routes the same events to its own share of the
-- destinations. A single sender keeps using ``federation_sender_position``.
CREATE TABLE federation_sender_instance_positions (
    instance_name TEXT PRIMARY KEY,
    stream_ordering BIGINT NOT NULL
);

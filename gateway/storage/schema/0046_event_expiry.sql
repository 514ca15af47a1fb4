-- Self-destructing events (MSC2228, ``enable_ephemeral_messages``): when each event's
-- content is to be pruned (``org.matrix.self_destruct_after``, in ms since the epoch).
CREATE TABLE event_expiry (
    event_id TEXT PRIMARY KEY NOT NULL,
    expiry_ts BIGINT NOT NULL
);
CREATE INDEX event_expiry_ts ON event_expiry (expiry_ts);

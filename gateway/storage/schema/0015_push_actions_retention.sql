-- When the events stream reached a position (written about once an hour by the push
-- rule evaluator), so that push actions older than the retention period can be
-- deleted by position without an index on event times.
CREATE TABLE push_action_checkpoints (
    stream_ordering BIGINT NOT NULL,
    ts BIGINT NOT NULL
);
CREATE INDEX push_action_checkpoints_ts ON push_action_checkpoints (ts);

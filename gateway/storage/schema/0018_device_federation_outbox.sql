-- To-device messages for other servers, kept until a transaction carrying them succeeded
-- (the federation sender's EDU queue is in memory; a restart queues these again).
CREATE TABLE device_federation_outbox (
    destination TEXT NOT NULL,
    message_id TEXT NOT NULL,
    content TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (destination, message_id)
);

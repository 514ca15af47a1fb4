-- Application services (bridges): who registered which users, how far each service has
-- been sent each stream, the transaction it has not acknowledged yet, and the rooms it
-- published in its networks' room directories.
-- Spec: https://spec.matrix.org/latest/application-service-api/

-- The service that registered a user (NULL for everyone else), as Synapse's users.appservice_id.
ALTER TABLE users ADD COLUMN appservice_id TEXT;

-- Per service: everything of a stream up to its position is in a transaction already
-- (acknowledged, or the one in appservice_txns). A new service starts at the positions of
-- the day it is added. last_txn_id: the ID of the last transaction made for it.
CREATE TABLE appservice_state (
    as_id TEXT PRIMARY KEY,
    events_position BIGINT NOT NULL,
    receipts_position BIGINT NOT NULL,
    presence_position BIGINT NOT NULL,
    to_device_position BIGINT NOT NULL,
    device_lists_position BIGINT NOT NULL,
    last_txn_id BIGINT NOT NULL DEFAULT 0
);

-- The transaction a service has not acknowledged yet (at most one per service): sent
-- again, with the same ID and contents, until the service answers 200. event_ids is a JSON
-- list; extra a JSON object (ephemeral events, to-device messages, device lists, key counts).
CREATE TABLE appservice_txns (
    as_id TEXT NOT NULL,
    txn_id BIGINT NOT NULL,
    event_ids TEXT NOT NULL,
    extra TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (as_id, txn_id)
);

-- Rooms a service published in the room directory of one of its networks
-- (PUT /directory/list/appservice/{networkId}/{roomId}).
CREATE TABLE appservice_room_list (
    as_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (as_id, network_id, room_id)
);
CREATE INDEX appservice_room_list_room ON appservice_room_list (room_id);

-- To-device messages are read by position for services (not only per device).
CREATE INDEX device_inbox_stream ON device_inbox (stream_id);

-- Rooms, events, the room DAG and room state.
--
-- Positions: every event row has a unique ``stream_ordering``. Events that are new to us
-- (created here, or received live over federation) take the next value of the growing
-- 'events' stream (1, 2, 3, ...): /sync and the federation sender read them in that order.
-- Events that come from the past (backfill, the state and auth chain of a join, other
-- outliers) take values from the 'backfill' stream, which goes down from -1, so that they
-- never look new. Outliers are also kept out of the timeline by their flag.

-- Named counters. A writer takes the next value with ``UPDATE ... RETURNING`` inside its
-- transaction, so the row lock orders commits: positions become visible in order.
CREATE TABLE stream_positions (
    stream_name TEXT PRIMARY KEY,
    position BIGINT NOT NULL
);
INSERT INTO stream_positions (stream_name, position) VALUES ('events', 0);
INSERT INTO stream_positions (stream_name, position) VALUES ('backfill', 0);
INSERT INTO stream_positions (stream_name, position) VALUES ('state_groups', 0);

-- One row per room this server knows. ``current_state_group`` is the state of the room
-- now (what ``current_state`` materialises); ``head_stream_ordering`` is the position of
-- the latest event added to the room's timeline: writers update it conditionally, so two
-- writers (even in two processes) cannot both extend the same head and fork the room.
CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT,
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    created_ts BIGINT NOT NULL,
    current_state_group BIGINT,
    head_stream_ordering BIGINT NOT NULL DEFAULT 0
);

-- One row per PDU. ``json`` is the canonical JSON as created or received.
-- ``state_group`` is the state after the event (for a rejected or non-state event, the
-- state before it); NULL for outliers, whose state we do not know.
CREATE TABLE events (
    event_id TEXT PRIMARY KEY,
    stream_ordering BIGINT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    depth BIGINT NOT NULL,
    origin_server_ts BIGINT NOT NULL,
    received_ts BIGINT NOT NULL,
    json TEXT NOT NULL,
    rejected_reason TEXT,
    outlier BOOLEAN NOT NULL DEFAULT FALSE,
    soft_failed BOOLEAN NOT NULL DEFAULT FALSE,
    state_group BIGINT,
    replaces_state TEXT
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_depth ON events (room_id, depth);

-- The DAG: prev_events edges, and the events that no other event points to yet.
CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
);
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
);

-- auth_events edges (a chain cover index can be added beside this later).
CREATE TABLE event_auth_edges (
    event_id TEXT NOT NULL,
    auth_event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
);
CREATE INDEX event_auth_edges_auth ON event_auth_edges (auth_event_id);

-- Redactions that apply: a row is written once the redaction is known to be allowed
-- against the event it redacts (the redacted event may arrive later over federation).
CREATE TABLE redactions (
    event_id TEXT PRIMARY KEY,
    redacts TEXT NOT NULL,
    room_id TEXT NOT NULL
);
CREATE INDEX redactions_redacts ON redactions (redacts);

-- Client transaction IDs (PUT .../send/{type}/{txnId}): idempotent per device.
CREATE TABLE event_txn_ids (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    inserted_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);
CREATE INDEX event_txn_ids_event ON event_txn_ids (event_id);
CREATE INDEX event_txn_ids_ts ON event_txn_ids (inserted_ts);

-- State snapshots. A group is either a full snapshot (prev_state_group NULL) or a delta
-- against prev_state_group; ``delta_depth`` counts the deltas down to a full snapshot and
-- is kept bounded by writing a full snapshot every so often.
CREATE TABLE state_groups (
    state_group BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    event_id TEXT,
    prev_state_group BIGINT,
    delta_depth INTEGER NOT NULL
);
CREATE INDEX state_groups_room ON state_groups (room_id);

-- The entries of a group (all of them for a snapshot, the changes for a delta). A NULL
-- event_id in a delta removes the key (only state resolution can do that).
CREATE TABLE state_group_entries (
    state_group BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (state_group, type, state_key)
);

-- The state of each room now, for fast reads.
CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
);

-- Every change to current_state, at the stream position of the event that caused it
-- (for /sync and for membership changes); prev_event_id is what it replaced.
CREATE TABLE current_state_deltas (
    stream_ordering BIGINT NOT NULL,
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    prev_event_id TEXT
);
CREATE INDEX current_state_deltas_stream ON current_state_deltas (stream_ordering);
CREATE INDEX current_state_deltas_room ON current_state_deltas (room_id, stream_ordering);

-- Membership derived from current_state: one row per (room, user).
CREATE TABLE room_memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    displayname TEXT,
    avatar_url TEXT,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_memberships_user ON room_memberships (user_id, membership);

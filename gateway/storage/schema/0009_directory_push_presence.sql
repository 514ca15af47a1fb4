-- Room aliases, the public room directory's room summaries, forgotten rooms, push rules,
-- push actions, pushers and presence.

-- Local room aliases (#alias:our.server -> room). ``creator`` may delete the alias.
CREATE TABLE room_aliases (
    room_alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- What the room directory and the user directory show of a room, kept in step with
-- current_state (same transaction) for the state events they need.
CREATE TABLE room_stats_state (
    room_id TEXT PRIMARY KEY,
    name TEXT,
    topic TEXT,
    avatar TEXT,
    canonical_alias TEXT,
    join_rules TEXT,
    history_visibility TEXT,
    guest_access TEXT,
    encryption TEXT,
    room_type TEXT
);
CREATE INDEX room_stats_state_join_rules ON room_stats_state (join_rules);

-- POST /rooms/{roomId}/forget: set on the user's (left or banned) membership row and
-- cleared when the membership changes again.
ALTER TABLE room_memberships ADD COLUMN forgotten BOOLEAN NOT NULL DEFAULT FALSE;

-- /timestamp_to_event
CREATE INDEX events_room_ts ON events (room_id, origin_server_ts);

-- User-defined push rules. Within (user_id, kind) the rule with the highest
-- ``priority`` is the most important.
CREATE TABLE push_rules (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    priority BIGINT NOT NULL,
    conditions TEXT,
    pattern TEXT,
    actions TEXT NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT TRUE,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- Per-user changes to server-default rules (NULL: the default).
CREATE TABLE push_rules_defaults (
    user_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    rule_id TEXT NOT NULL,
    enabled BOOLEAN,
    actions TEXT,
    PRIMARY KEY (user_id, kind, rule_id)
);

-- What the push rules said about an event for one user (only events that notify or
-- highlight). Counted for /sync's unread_notifications after the user's read receipt.
CREATE TABLE event_push_actions (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    notif BOOLEAN NOT NULL,
    highlight BOOLEAN NOT NULL,
    thread_id TEXT NOT NULL,
    actions TEXT NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX event_push_actions_user_room ON event_push_actions (user_id, room_id, stream_ordering);

-- Pushers (POST /pushers/set). One per (app_id, pushkey, user).
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    device_id TEXT,
    kind TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers (user_id);

-- Presence as the user set it (PUT /presence/{userId}/status).
CREATE TABLE presence (
    user_id TEXT PRIMARY KEY,
    presence TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    updated_ts BIGINT NOT NULL
);

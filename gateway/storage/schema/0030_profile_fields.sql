-- Extended profile fields (spec v1.16: m.tz and custom keys): a JSON object beside
-- the display name and avatar URL columns; NULL when the user has none.
ALTER TABLE profiles ADD COLUMN fields TEXT;

-- Display name and avatar changes still to send into the user's rooms as new
-- m.room.member events: written with the change (acknowledged means stored), advanced
-- room by room (rooms in ID order, last_room_id the last one done), deleted when done.
-- A new change bumps generation and starts over.
CREATE TABLE profile_propagation (
    user_id TEXT PRIMARY KEY,
    generation BIGINT NOT NULL,
    last_room_id TEXT
);

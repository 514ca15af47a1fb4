-- Account moderation (the spec's locking and suspension, Synapse's shadow-banning), and
-- admin sessions as another user.
-- https://spec.matrix.org/latest/client-server-api/#account-moderation
ALTER TABLE users ADD COLUMN shadow_banned BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN suspended BOOLEAN NOT NULL DEFAULT FALSE;

-- A token an admin got with POST /_synapse/admin/v1/users/{userId}/login: it belongs to the
-- admin (user_id, so the admin's logout/all ends it) and acts as puppets_user_id.
ALTER TABLE access_tokens ADD COLUMN puppets_user_id TEXT;


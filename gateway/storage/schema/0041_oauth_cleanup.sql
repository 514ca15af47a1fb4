-- Unused OAuth 2.0 client registrations and finished sessions are deleted (clients register
-- anew for every sign-in; the spec lets a server delete clients without an active session):
-- the lookups that find them.
CREATE INDEX oauth_clients_created ON oauth_clients (created_ts);
CREATE INDEX oauth_sessions_client ON oauth_sessions (client_id);
CREATE INDEX oauth_sessions_finished ON oauth_sessions (finished_ts);
CREATE INDEX oauth_grants_client ON oauth_grants (client_id);

-- What a user-interactive auth session remembers: the parameters of its first request
-- (registration's username, device, inhibit_login and the password's hash, so that the
-- client may leave them out when it completes the stages) and the user it registered (a
-- retry of the same registration answers with that user instead of failing).
ALTER TABLE ui_auth_sessions ADD COLUMN data TEXT NOT NULL DEFAULT '{}';

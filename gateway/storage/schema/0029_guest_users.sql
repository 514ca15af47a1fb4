-- Guest accounts (POST /register?kind=guest), until they upgrade to full accounts.
-- https://spec.matrix.org/latest/client-server-api/#guest-access
ALTER TABLE users ADD COLUMN is_guest BOOLEAN NOT NULL DEFAULT FALSE;

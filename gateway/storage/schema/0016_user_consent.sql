-- Which version of the privacy policy (``user_consent.version``) a user accepted, and when
-- (Synapse's users.consent_version / consent_ts).
ALTER TABLE users ADD COLUMN consent_version TEXT;
ALTER TABLE users ADD COLUMN consent_ts BIGINT;

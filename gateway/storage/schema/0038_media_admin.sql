-- The media admin API: protection from quarantine, and when media was last served (local
-- media by date, the remote media cache's purge). NULL: not served since it was stored.
ALTER TABLE local_media ADD COLUMN safe_from_quarantine BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE local_media ADD COLUMN last_access_ts BIGINT;
ALTER TABLE remote_media_cache ADD COLUMN last_access_ts BIGINT;
-- Thumbnails of remote media fetched without the media itself have no cache row of their own.
ALTER TABLE media_thumbnails ADD COLUMN last_access_ts BIGINT;
CREATE INDEX local_media_user_created ON local_media (user_id, created_ts);

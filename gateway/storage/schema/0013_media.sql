-- The media repository: metadata here, bytes on disk under media_store_path.
-- Files are named by filesystem_id (chosen by us, never by a client or a remote server).

-- Media uploaded here. A row with upload_ts NULL is a pending asynchronous upload
-- (POST /_matrix/media/v1/create), usable until unused_expires_ts.
CREATE TABLE local_media (
    media_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    unused_expires_ts BIGINT,
    upload_ts BIGINT,
    media_type TEXT,
    media_length BIGINT,
    upload_name TEXT,
    filesystem_id TEXT,
    sha256 TEXT,
    quarantined_by TEXT
);
CREATE INDEX local_media_pending ON local_media (user_id, unused_expires_ts);

-- Media of other servers, fetched over federation and kept.
CREATE TABLE remote_media_cache (
    media_origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    media_type TEXT NOT NULL,
    media_length BIGINT NOT NULL,
    upload_name TEXT,
    filesystem_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    sha256 TEXT,
    quarantined_by TEXT,
    PRIMARY KEY (media_origin, media_id)
);

-- Generated thumbnails of local (media_origin = our server name) and remote media.
CREATE TABLE media_thumbnails (
    media_origin TEXT NOT NULL,
    media_id TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    thumbnail_type TEXT NOT NULL,
    thumbnail_width INTEGER NOT NULL,
    thumbnail_height INTEGER NOT NULL,
    thumbnail_length BIGINT NOT NULL,
    filesystem_id TEXT NOT NULL,
    PRIMARY KEY (media_origin, media_id, width, height, method)
);

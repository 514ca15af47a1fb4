-- Missed-message mails (email pushers): how far each pusher has mailed, by stream position
-- of the push actions (event_push_actions). A restart goes on from here.
CREATE TABLE email_pusher_progress (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    last_stream_ordering BIGINT NOT NULL,
    last_mail_ts BIGINT,
    PRIMARY KEY (user_id, app_id, pushkey)
);

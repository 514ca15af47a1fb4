-- Users who asked, on deactivating, for their content to be erased (``erase: true``): their
-- events are served redacted to the users and servers that could not see them at the time.
CREATE TABLE erased_users (
    user_id TEXT PRIMARY KEY NOT NULL
);

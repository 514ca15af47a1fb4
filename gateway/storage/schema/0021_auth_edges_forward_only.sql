-- Auth edges are only read forwards (an event's auth events, and the auth chain from
-- there: the primary key's prefix). The index by auth_event_id was never read, and
-- every join writes ~3.5 edges per event of the room's state and auth chain.
DROP INDEX event_auth_edges_auth;

-- Servers sharing the database, each with the time (the database's clock,
-- milliseconds since 1970) it last said it was alive. A session's `server`
-- holds its lease: that server runs its tasks and follows its sandbox while
-- its heartbeat is younger than `store.lease_secs`; after that another
-- server takes the session over.
CREATE TABLE servers (
    id        TEXT PRIMARY KEY,
    heartbeat BIGINT NOT NULL
);
CREATE INDEX sessions_server ON sessions (server);
-- Tasks queued in one statement's millisecond keep their order.
ALTER TABLE tasks ADD COLUMN rowid BIGINT GENERATED ALWAYS AS IDENTITY;
CREATE INDEX tasks_session_queued ON tasks (session_id) WHERE status = 'queued';

-- Servers sharing the database, each with the time (the database's clock,
-- milliseconds since 1970) it last said it was alive. A session's `server`
-- holds its lease: that server runs its tasks and follows its sandbox while
-- its heartbeat is younger than `store.lease_secs`. (On SQLite only one
-- server writes; the table stays as PostgreSQL's for one set of queries.)
CREATE TABLE servers (
    id        TEXT PRIMARY KEY,
    heartbeat INTEGER NOT NULL
);
CREATE INDEX sessions_server ON sessions (server);

-- Tasks given to sessions, so a restart knows which ones it interrupted.
CREATE TABLE tasks (
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    task        TEXT NOT NULL,
    status      TEXT NOT NULL,               -- queued, running, completed, failed, cancelled, interrupted, max_steps
    created     TEXT NOT NULL,
    finished    TEXT,
    PRIMARY KEY (session_id, id)
);
CREATE INDEX tasks_unfinished ON tasks (status) WHERE status IN ('queued', 'running');

-- Checkpoints: the workspace's state when a session was made and after
-- each task, recorded by the sandbox agent in the container's own git
-- object store (`id` is the commit there). `messages` is the conversation's
-- next message number when it was taken, so a rewind of the conversation
-- knows where to cut.
CREATE TABLE checkpoints (
    session_id    TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq           INTEGER NOT NULL,           -- 1, 2, ... per session
    id            TEXT NOT NULL,
    task_id       TEXT,                       -- NULL: taken when the session was made
    task          TEXT,
    created       TEXT NOT NULL,
    files_changed INTEGER NOT NULL,
    insertions    INTEGER NOT NULL,
    deletions     INTEGER NOT NULL,
    skipped       TEXT NOT NULL,              -- JSON [{path, size, reason}]
    messages      INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX checkpoints_by_id ON checkpoints (session_id, id);

-- The checkpoint the workspace is at: the parent of the next one (the
-- latest, or the one a rewind went back to).
ALTER TABLE sessions ADD COLUMN checkpoint TEXT;

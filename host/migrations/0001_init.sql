-- Crogia's state: sessions, their background processes, their event log and
-- their conversation with the model. Timestamps are RFC 3339 UTC strings.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,           -- 8 lowercase hex characters
    container_id  TEXT NOT NULL,
    workdir       TEXT NOT NULL,              -- absolute host path of the workspace
    created       TEXT NOT NULL,
    last_task     TEXT,
    -- Set when the session is broken (its container vanished, ...): why.
    error         TEXT
);

CREATE TABLE processes (
    session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    start_ticks  INTEGER NOT NULL,
    cmd          TEXT NOT NULL,
    log          TEXT NOT NULL,
    started      TEXT NOT NULL,
    PRIMARY KEY (session_id, id)
);

CREATE TABLE events (
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    event       TEXT NOT NULL,                -- the event as sent, JSON
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE messages (
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq         INTEGER NOT NULL,
    message     TEXT NOT NULL,                -- one chat message, JSON
    PRIMARY KEY (session_id, seq)
);

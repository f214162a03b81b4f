-- Crogia's state in PostgreSQL: the same tables as the SQLite schema
-- (host/migrations/, 0001 to 0007) in one step. Timestamps are RFC 3339 UTC
-- strings with milliseconds, as there, so they sort as text. SQLite's
-- implicit rowid breaks ties in insertion order; here the tables whose
-- queries need that have an explicit identity column of that name.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    container_id  TEXT NOT NULL,
    workdir       TEXT NOT NULL,
    created       TEXT NOT NULL,
    last_task     TEXT,
    error         TEXT,
    network       TEXT,
    approval      TEXT NOT NULL DEFAULT 'default',
    checkpoint    TEXT,
    owner         TEXT NOT NULL DEFAULT '',
    budget_tokens BIGINT,
    -- The last event number given out (see append_events).
    last_event    BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE processes (
    session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    pid          BIGINT NOT NULL,
    start_ticks  BIGINT NOT NULL,
    cmd          TEXT NOT NULL,
    log          TEXT NOT NULL,
    started      TEXT NOT NULL,
    rowid        BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (session_id, id)
);

CREATE TABLE events (
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    event       TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE messages (
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq         BIGINT NOT NULL,
    message     TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
);

CREATE TABLE tasks (
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    id          TEXT NOT NULL,
    task        TEXT NOT NULL,
    status      TEXT NOT NULL,
    created     TEXT NOT NULL,
    finished    TEXT,
    PRIMARY KEY (session_id, id)
);
CREATE INDEX tasks_unfinished ON tasks (status) WHERE status IN ('queued', 'running');

CREATE TABLE approvals (
    session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    tool_call_id TEXT NOT NULL,
    tool_name    TEXT NOT NULL,
    arguments    TEXT NOT NULL,
    subject      TEXT NOT NULL,
    requested    TEXT NOT NULL,
    expires      TEXT NOT NULL,
    decision     TEXT,
    message      TEXT,
    resolved_by  TEXT,
    resolved     TEXT,
    rowid        BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (session_id, id)
);
CREATE INDEX approvals_pending ON approvals (session_id) WHERE decision IS NULL;

CREATE TABLE approval_rules (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    tool_name  TEXT NOT NULL,
    pattern    TEXT NOT NULL,
    created    TEXT NOT NULL,
    rowid      BIGINT GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (session_id, tool_name, pattern)
);

CREATE TABLE checkpoints (
    session_id    TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    seq           BIGINT NOT NULL,
    id            TEXT NOT NULL,
    task_id       TEXT,
    task          TEXT,
    created       TEXT NOT NULL,
    files_changed BIGINT NOT NULL,
    insertions    BIGINT NOT NULL,
    deletions     BIGINT NOT NULL,
    skipped       TEXT NOT NULL,
    messages      BIGINT NOT NULL,
    PRIMARY KEY (session_id, seq)
);
CREATE INDEX checkpoints_by_id ON checkpoints (session_id, id);

CREATE TABLE usage (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    principal         TEXT NOT NULL,
    session_id        TEXT NOT NULL,
    task_id           TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_tokens     BIGINT NOT NULL,
    completion_tokens BIGINT NOT NULL,
    at                TEXT NOT NULL
);
CREATE INDEX usage_by_principal ON usage (principal, at);
CREATE INDEX usage_by_session ON usage (session_id);
CREATE INDEX usage_by_time ON usage (at);

CREATE TABLE compactions (
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    upto        BIGINT NOT NULL,
    summary     TEXT,
    created     TEXT NOT NULL,
    PRIMARY KEY (session_id, upto)
);

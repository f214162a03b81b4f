-- Principals: who owns each session (the name of the principal that made
-- it; '' for sessions made before principals, which only admins see), and
-- each session's token budget (NULL: none).
ALTER TABLE sessions ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE sessions ADD COLUMN budget_tokens INTEGER;

-- The usage ledger: one row per model call. Rows outlive their session
-- (what was used stays used), so there is no foreign key.
CREATE TABLE usage (
    id                INTEGER PRIMARY KEY,
    principal         TEXT NOT NULL,
    session_id        TEXT NOT NULL,
    task_id           TEXT NOT NULL,
    model             TEXT NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    at                TEXT NOT NULL               -- RFC 3339 UTC, sortable
);
CREATE INDEX usage_by_principal ON usage (principal, at);
CREATE INDEX usage_by_session ON usage (session_id);
CREATE INDEX usage_by_time ON usage (at);

-- Compactions of a session's conversation: the messages up to `upto`
-- (their sequence numbers) are replaced, for the model, by `summary` (NULL:
-- dropped without one). The messages themselves are kept, so a rewind to
-- before a compaction gets them back.
CREATE TABLE compactions (
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    upto        INTEGER NOT NULL,
    summary     TEXT,                             -- one message, stored as messages are
    created     TEXT NOT NULL,
    PRIMARY KEY (session_id, upto)
);

-- How a session's tool calls are approved: default (per tool, from config),
-- all (every tool that changes something asks) or none.
ALTER TABLE sessions ADD COLUMN approval TEXT NOT NULL DEFAULT 'default';

-- Requests for a person's approval of one tool call. decision NULL: pending.
CREATE TABLE approvals (
    session_id   TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    id           TEXT NOT NULL,
    task_id      TEXT NOT NULL,
    tool_call_id TEXT NOT NULL,
    tool_name    TEXT NOT NULL,
    arguments    TEXT NOT NULL,              -- JSON, as the model gave them
    subject      TEXT NOT NULL,
    requested    TEXT NOT NULL,
    expires      TEXT NOT NULL,
    decision     TEXT,                       -- allow, allow_session, deny, cancelled
    message      TEXT,
    resolved_by  TEXT,
    resolved     TEXT,
    PRIMARY KEY (session_id, id)
);
CREATE INDEX approvals_pending ON approvals (session_id) WHERE decision IS NULL;

-- What "allow_session" added: calls of that tool whose subject matches the
-- pattern run without asking, for the rest of the session.
CREATE TABLE approval_rules (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    tool_name  TEXT NOT NULL,
    pattern    TEXT NOT NULL,
    created    TEXT NOT NULL,
    PRIMARY KEY (session_id, tool_name, pattern)
);

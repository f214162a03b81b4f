-- Each session's last event number, given out in the same transaction that
-- stores the events: writers on several servers never reuse one nor skip one.
ALTER TABLE sessions ADD COLUMN last_event INTEGER NOT NULL DEFAULT 0;
UPDATE sessions SET last_event = (SELECT COALESCE(MAX(seq), 0) FROM events WHERE events.session_id = sessions.id);

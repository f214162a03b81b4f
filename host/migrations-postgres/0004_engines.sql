-- The Docker engine each session's container is on ([[sandbox.engines]]'
-- name); NULL: the first configured, as for sessions from before.
ALTER TABLE sessions ADD COLUMN engine TEXT;

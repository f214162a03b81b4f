-- Which server made each session and runs each task (its id, kept in its
-- data directory): servers sharing a database recover only their own
-- unfinished tasks, and only a session's own server follows its sandbox's
-- file events and egress.
ALTER TABLE sessions ADD COLUMN server TEXT;
ALTER TABLE tasks ADD COLUMN server TEXT;

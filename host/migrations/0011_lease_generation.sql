-- How many times each session's lease changed hands. A server running a
-- task records the number it started under; its writes (events, messages,
-- the task's end) are refused once another server took the session over,
-- so a server cut off from the database can never record what it did
-- after it lost the lease (fencing).
ALTER TABLE sessions ADD COLUMN lease INTEGER NOT NULL DEFAULT 0;

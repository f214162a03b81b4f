-- A session's own network settings (JSON: {"allow": [...] | null, "deny": [...]}); NULL: none.
ALTER TABLE sessions ADD COLUMN network TEXT;

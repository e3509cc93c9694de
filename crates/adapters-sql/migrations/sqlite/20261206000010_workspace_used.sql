-- Whether an operation that may change the workspace (a command, an upload, a background
-- process, a terminal) ever entered the session's sandbox. A sandbox never used needs no
-- archive before it is removed. Rows from before this column are counted as used: nothing
-- can be promised about them. New rows start unused.
ALTER TABLE sandbox_sessions
    ADD COLUMN workspace_used INTEGER NOT NULL DEFAULT 0 CHECK (workspace_used IN (0, 1));
UPDATE sandbox_sessions SET workspace_used = 1;

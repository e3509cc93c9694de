-- Timestamps are INTEGER microseconds since the Unix epoch, UTC: they compare and sort as
-- numbers, exactly like the instants they stand for. Ids are lower-case hyphenated UUID text,
-- whose lexical order is the byte order PostgreSQL's uuid type sorts by.

CREATE TABLE sandbox_sessions (
    session_id   TEXT    NOT NULL PRIMARY KEY,
    chat_id      TEXT    NOT NULL,
    container_id TEXT    NOT NULL CHECK (container_id <> ''),
    status       TEXT    NOT NULL CHECK (status IN ('running', 'stopped', 'crashed')),
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);

-- At most one running session per chat; also serves get_running_by_chat.
CREATE UNIQUE INDEX sandbox_sessions_one_running_per_chat
    ON sandbox_sessions (chat_id) WHERE status = 'running';

-- Every index below is partial on one status, and its predicate is spelled exactly as the
-- queries spell theirs (a literal, never a parameter), so that the planner can use it and,
-- without statistics, has no full-table status index to mistake for a better plan.

-- The expiry scan: running sessions with expires_at <= now, in (expires_at, session_id) order,
-- read straight off the index up to the limit. Also serves count_running.
CREATE INDEX sandbox_sessions_running_by_expiry
    ON sandbox_sessions (expires_at, session_id) WHERE status = 'running';

-- Status scans (list by status): one ordered, limited range per status, merged by the query.
CREATE INDEX sandbox_sessions_running_by_created
    ON sandbox_sessions (created_at, session_id) WHERE status = 'running';
CREATE INDEX sandbox_sessions_stopped_by_created
    ON sandbox_sessions (created_at, session_id) WHERE status = 'stopped';
CREATE INDEX sandbox_sessions_crashed_by_created
    ON sandbox_sessions (created_at, session_id) WHERE status = 'crashed';

CREATE TABLE maintenance_leases (
    name              TEXT    NOT NULL PRIMARY KEY,
    holder            TEXT,
    lease_expires_at  INTEGER NOT NULL,
    last_completed_at INTEGER
);

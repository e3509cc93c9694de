-- One row, rewritten by a readiness probe when no write was tried for a while: a write that
-- changes a page, so that a file that no longer takes writes is found without waiting for a
-- request to fail.
CREATE TABLE store_write_probe (
    id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    written_at INTEGER NOT NULL
);

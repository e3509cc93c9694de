-- The warm pool: started, never-used sandboxes that a create claims. Instants are INTEGER
-- microseconds since the Unix epoch, by the clock of the replica that wrote them. `engine`
-- names the Docker engine a slot's container lives on.
CREATE TABLE sandbox_pool (
    slot_id      TEXT    NOT NULL PRIMARY KEY,
    engine       TEXT    NOT NULL DEFAULT 'default',
    fingerprint  TEXT    NOT NULL,
    state        TEXT    NOT NULL CHECK (state IN ('starting', 'ready', 'claimed')),
    container_id TEXT    UNIQUE CHECK (container_id <> ''),
    created_at   BIGINT  NOT NULL,
    changed_at   BIGINT  NOT NULL
);

-- A claim takes the oldest ready slot of the current configuration.
CREATE INDEX sandbox_pool_ready ON sandbox_pool (engine, fingerprint, created_at, slot_id)
    WHERE state = 'ready';

-- A container without a session label is traced back to its session by its id.
CREATE INDEX sandbox_sessions_by_container ON sandbox_sessions (container_id);

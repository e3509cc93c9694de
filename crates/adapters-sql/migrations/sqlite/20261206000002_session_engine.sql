-- The Docker engine each sandbox runs on (`--engine NAME=URL`); rows made before engines
-- existed ran on the one engine, named `default`.
ALTER TABLE sandbox_sessions ADD COLUMN engine TEXT NOT NULL DEFAULT 'default';

-- Workspace archives (`--workspace-store database`): one row per chat naming the generation of
-- its complete archive, whose bytes are the chunks of that generation in `seq` order. A new
-- archive's chunks are written under a new generation first; one transaction then points the
-- chat's row at it and deletes the old generation's chunks, so a reader (one statement, one
-- snapshot) sees the old archive or the new one whole. Chunks of a generation no row names (an
-- upload cut short by a crash) are reaped by the maintenance sweep.
CREATE TABLE workspace_archives (
    chat_id uuid PRIMARY KEY,
    generation uuid NOT NULL UNIQUE,
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    saved_at timestamptz NOT NULL,
    session_id uuid,
    -- When the archive was last saved or restored: what retention judges.
    used_at timestamptz NOT NULL
);

CREATE INDEX workspace_archives_used_at ON workspace_archives (used_at);

CREATE TABLE workspace_chunks (
    generation uuid NOT NULL,
    seq integer NOT NULL,
    data bytea NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (generation, seq)
);

CREATE INDEX workspace_chunks_written_at ON workspace_chunks (written_at);

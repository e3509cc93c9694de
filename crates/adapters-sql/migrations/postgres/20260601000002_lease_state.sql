-- What a lease's holders keep between runs (the maintenance sweep's resume positions), shared
-- by every replica and kept across restarts.
ALTER TABLE maintenance_leases ADD COLUMN state text;

-- What a lease's holders keep between runs (the maintenance sweep's resume positions), so that
-- a restart does not forget it.
ALTER TABLE maintenance_leases ADD COLUMN state TEXT;

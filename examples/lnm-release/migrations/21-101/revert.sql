-- 21-101 is idempotent; reverting drops the indexes it added, never the data tables.
DROP INDEX IF EXISTS ix_linksets_expires;
DROP INDEX IF EXISTS ux_linksets_tenant_key;
DROP INDEX IF EXISTS ix_observations_advisory;
DROP INDEX IF EXISTS ix_observations_created;
DROP INDEX IF EXISTS ix_observations_tenant_id;

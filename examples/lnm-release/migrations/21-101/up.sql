-- 21-101 EnsureLinkNotMergeShardingAndTtlMigration, relational port.
-- Observations are append-only; linksets are derived per tenant. Idempotent by construction.
CREATE TABLE IF NOT EXISTS advisory_observations (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    source TEXT NOT NULL,
    advisory_key TEXT NOT NULL,
    document TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS advisory_linksets (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    advisory_key TEXT NOT NULL,
    observation_id INTEGER NOT NULL REFERENCES advisory_observations (id),
    expires_at TEXT
);
-- "Shard" key: every query is by tenant first; TTL sweeps use expires_at.
CREATE INDEX IF NOT EXISTS ix_observations_tenant_id ON advisory_observations (tenant, id);
CREATE INDEX IF NOT EXISTS ix_observations_created ON advisory_observations (created_at);
CREATE INDEX IF NOT EXISTS ix_observations_advisory ON advisory_observations (tenant, advisory_key, id);
CREATE UNIQUE INDEX IF NOT EXISTS ux_linksets_tenant_key ON advisory_linksets (tenant, advisory_key, observation_id);
CREATE INDEX IF NOT EXISTS ix_linksets_expires ON advisory_linksets (expires_at);

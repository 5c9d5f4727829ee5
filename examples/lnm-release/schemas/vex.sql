CREATE TABLE IF NOT EXISTS vex_statements (id INTEGER PRIMARY KEY, tenant TEXT NOT NULL, advisory_key TEXT NOT NULL, product TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('affected','not_affected','fixed','under_investigation')), justification TEXT);
CREATE INDEX IF NOT EXISTS ix_vex_product ON vex_statements (tenant, product);

CREATE TABLE IF NOT EXISTS policy_packs (pack_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS policy_findings (id INTEGER PRIMARY KEY, pack_id TEXT NOT NULL REFERENCES policy_packs (pack_id), advisory_key TEXT NOT NULL, verdict TEXT NOT NULL);

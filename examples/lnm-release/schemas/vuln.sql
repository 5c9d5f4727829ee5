CREATE TABLE IF NOT EXISTS vuln_advisories (advisory_key TEXT PRIMARY KEY, severity TEXT, published_at TEXT, summary TEXT);
CREATE TABLE IF NOT EXISTS vuln_affected (advisory_key TEXT NOT NULL REFERENCES vuln_advisories (advisory_key), purl TEXT NOT NULL, version_range TEXT NOT NULL, PRIMARY KEY (advisory_key, purl, version_range));

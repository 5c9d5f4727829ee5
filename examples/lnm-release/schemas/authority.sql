CREATE TABLE IF NOT EXISTS authority_clients (client_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, display_name TEXT NOT NULL, created_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS authority_tokens (token_id TEXT PRIMARY KEY, client_id TEXT NOT NULL REFERENCES authority_clients (client_id), expires_at TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);

CREATE TABLE IF NOT EXISTS notify_channels (channel_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, kind TEXT NOT NULL, target TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS notify_deliveries (id INTEGER PRIMARY KEY, channel_id TEXT NOT NULL REFERENCES notify_channels (channel_id), event TEXT NOT NULL, delivered_at TEXT, attempts INTEGER NOT NULL DEFAULT 0);

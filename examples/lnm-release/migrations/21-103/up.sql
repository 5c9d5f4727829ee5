-- 21-103: map raw payload keys to content-addressed object-store URIs (placeholder contract).
CREATE TABLE IF NOT EXISTS cas_uri_map (
    key TEXT PRIMARY KEY,
    uri TEXT NOT NULL,
    size_bytes INTEGER
);

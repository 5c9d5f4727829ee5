-- Baseline graph tables as they exist before the canonical-key change (idempotent: a live
-- site already has them; a fresh rehearsal database gets them here).
CREATE TABLE IF NOT EXISTS field_values (
    id INTEGER PRIMARY KEY,
    dump TEXT NOT NULL,
    row_key TEXT NOT NULL,
    field TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sightings (
    id INTEGER PRIMARY KEY,
    field_value_id INTEGER NOT NULL REFERENCES field_values (id),
    seen_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_field_values_composite ON field_values (dump, row_key, field, value);

-- Phase 2 (shadow write): new columns beside the old composite key; nothing reads them yet.
ALTER TABLE field_values ADD COLUMN canonical_key TEXT;
ALTER TABLE field_values ADD COLUMN canonical_key_version TEXT;
CREATE INDEX IF NOT EXISTS ix_field_values_canonical_key ON field_values (canonical_key);

DROP INDEX IF EXISTS ix_field_values_canonical_key;
ALTER TABLE field_values DROP COLUMN canonical_key_version;
ALTER TABLE field_values DROP COLUMN canonical_key;

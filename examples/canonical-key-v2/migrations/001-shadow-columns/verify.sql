SELECT COUNT(*) >= 0 FROM field_values WHERE canonical_key IS NULL OR canonical_key_version IS NULL;

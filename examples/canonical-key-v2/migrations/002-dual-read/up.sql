-- Phase 3 (dual read): one view answers by either key, so queries can move over gradually.
CREATE VIEW field_values_dual AS
    SELECT id, dump, row_key, field, value, canonical_key, canonical_key_version,
           COALESCE(canonical_key, 'v1:' || dump || '|' || row_key || '|' || field || '|' || value) AS lookup_key
    FROM field_values;

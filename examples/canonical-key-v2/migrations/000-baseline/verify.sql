SELECT COUNT(*) >= 0 FROM field_values;
SELECT COUNT(*) >= 0 FROM sightings;

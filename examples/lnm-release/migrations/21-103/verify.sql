SELECT COUNT(*) = 0 FROM cas_uri_map WHERE uri NOT LIKE 'cas://sha256/%';

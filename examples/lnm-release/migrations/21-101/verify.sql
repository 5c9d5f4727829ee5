SELECT COUNT(*) >= 0 FROM advisory_observations;
SELECT COUNT(*) >= 0 FROM advisory_linksets WHERE expires_at IS NULL OR expires_at > '';

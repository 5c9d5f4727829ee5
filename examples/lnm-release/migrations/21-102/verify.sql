SELECT COUNT(*) >= 0 FROM advisory_observations WHERE raw_linkset IS NULL;
SELECT COUNT(*) = 0 FROM advisory_supersedes WHERE observation_id = superseded_by;

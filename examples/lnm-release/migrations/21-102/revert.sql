-- The rollback script of the runbook: remove supersedes/tombstones and the raw projection.
DROP TABLE IF EXISTS advisory_tombstones;
DROP TABLE IF EXISTS advisory_supersedes;
ALTER TABLE advisory_observations DROP COLUMN raw_linkset;

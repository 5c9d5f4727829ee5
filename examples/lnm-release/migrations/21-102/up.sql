-- 21-102: raw linkset projection and supersedes/tombstone records.
ALTER TABLE advisory_observations ADD COLUMN raw_linkset TEXT;
CREATE TABLE IF NOT EXISTS advisory_supersedes (
    observation_id INTEGER NOT NULL REFERENCES advisory_observations (id),
    superseded_by INTEGER NOT NULL REFERENCES advisory_observations (id),
    recorded_at TEXT NOT NULL,
    PRIMARY KEY (observation_id, superseded_by)
);
CREATE TABLE IF NOT EXISTS advisory_tombstones (
    observation_id INTEGER PRIMARY KEY REFERENCES advisory_observations (id),
    reason TEXT NOT NULL,
    recorded_at TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS scheduler_jobs (job_id TEXT PRIMARY KEY, kind TEXT NOT NULL, cron TEXT, enabled INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS scheduler_runs (run_id TEXT PRIMARY KEY, job_id TEXT NOT NULL REFERENCES scheduler_jobs (job_id), started_at TEXT NOT NULL, finished_at TEXT, status TEXT NOT NULL);

"""kit apply: migrations, batched resumable backfills, seeds and checks on SQLite and PostgreSQL."""

"""DDL of the ``kit_*`` state tables (created with the apply lock held; see StateStore.ensure_tables)."""

from __future__ import annotations

from kitbuilder.apply.db import Database


def _lock_ddl() -> str:
    return """CREATE TABLE IF NOT EXISTS kit_lock (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            expires_at TEXT NOT NULL
        )"""


def ddl(db: Database) -> list[str]:
    return [
        """CREATE TABLE IF NOT EXISTS kit_migrations (
            id TEXT PRIMARY KEY,
            phase TEXT NOT NULL,
            kind TEXT NOT NULL,
            checksum TEXT NOT NULL,
            checksum_algorithm TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('pending','running','succeeded','failed','reverted')),
            installed_rank INTEGER NOT NULL,
            run_id TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT,
            duration_ms BIGINT,
            installed_by TEXT NOT NULL,
            kit_name TEXT NOT NULL,
            kit_version TEXT NOT NULL,
            kit_sequence BIGINT NOT NULL,
            kit_sha256 TEXT NOT NULL,
            last_error TEXT
        )""",
        f"""CREATE TABLE IF NOT EXISTS kit_events (
            {db.id_column},
            at TEXT NOT NULL,
            run_id TEXT NOT NULL,
            event TEXT NOT NULL CHECK (event IN ('deploy','verify','revert','fail','repair','backfill','seed','check')),
            subject TEXT NOT NULL,
            detail TEXT
        )""",
        """CREATE TABLE IF NOT EXISTS kit_runs (
            run_id TEXT PRIMARY KEY,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            argv TEXT NOT NULL,
            kit_name TEXT NOT NULL,
            kit_sequence BIGINT NOT NULL,
            kit_sha256 TEXT NOT NULL,
            report_sha256 TEXT,
            status TEXT NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS kit_backfill_runs (
            job TEXT PRIMARY KEY,
            kit_sha256 TEXT NOT NULL,
            checksum TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('active','paused','failed','finished','reverted')),
            pause_reason TEXT,
            cursor_value TEXT,
            batch_size INTEGER NOT NULL,
            rows_processed BIGINT NOT NULL DEFAULT 0,
            rows_failed BIGINT NOT NULL DEFAULT 0,
            batches BIGINT NOT NULL DEFAULT 0,
            started_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            finished_at TEXT,
            remaining BIGINT
        )""",
        f"""CREATE TABLE IF NOT EXISTS kit_backfill_batches (
            {db.id_column},
            job TEXT NOT NULL,
            run_id TEXT NOT NULL,
            cursor_from TEXT,
            cursor_to TEXT NOT NULL,
            batch_size INTEGER NOT NULL,
            rows_processed INTEGER NOT NULL,
            rows_failed INTEGER NOT NULL,
            duration_ms INTEGER NOT NULL,
            at TEXT NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS kit_backfill_quarantine (
            {db.id_column},
            job TEXT NOT NULL,
            row_key TEXT NOT NULL,
            error TEXT NOT NULL,
            run_id TEXT NOT NULL,
            at TEXT NOT NULL
        )""",
        # A backfill split into key ranges for parallel workers (kit apply --workers N): recorded before the
        # first batch, so a rerun after a kill resumes the same ranges, each from its own cursor. Keys are JSON.
        """CREATE TABLE IF NOT EXISTS kit_backfill_ranges (
            job TEXT NOT NULL,
            range_no INTEGER NOT NULL,
            lo_value TEXT,
            hi_value TEXT,
            cursor_value TEXT,
            rows_processed BIGINT NOT NULL DEFAULT 0,
            rows_failed BIGINT NOT NULL DEFAULT 0,
            batches BIGINT NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL,
            PRIMARY KEY (job, range_no)
        )""",
        _lock_ddl(),
    ]


# Columns added after the first release: (table, column, DDL type). Added in place to older databases.
_ADDED_COLUMNS = (("kit_backfill_runs", "remaining", "BIGINT"),)

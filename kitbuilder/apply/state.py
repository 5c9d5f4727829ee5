"""State tables kit apply keeps in the target database, portable across SQLite and PostgreSQL.

They are the source of truth for what is applied and how far each backfill
got; every change to them is committed in the same transaction as the work it
records, which is what makes a killed run resumable without double work.
"""

from __future__ import annotations

import getpass
import socket
from datetime import UTC, datetime
from typing import Any

from kitbuilder.apply.db import Database

CHECKSUM_ALGORITHM = "kit-sha256-v1"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def installed_by() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


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
            finished_at TEXT
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
        """CREATE TABLE IF NOT EXISTS kit_lock (
            name TEXT PRIMARY KEY,
            holder TEXT NOT NULL,
            host TEXT NOT NULL,
            pid INTEGER NOT NULL,
            expires_at TEXT NOT NULL
        )""",
    ]


def ensure_tables(db: Database) -> None:
    with db.transaction():
        for statement in ddl(db):
            db.execute(statement)


def record_event(db: Database, run_id: str, event: str, subject: str, detail: str | None = None) -> None:
    db.execute(
        "INSERT INTO kit_events (at, run_id, event, subject, detail) VALUES (:at, :run, :event, :subject, :detail)",
        {"at": utc_now(), "run": run_id, "event": event, "subject": subject, "detail": detail},
    )


def migration_rows(db: Database) -> dict[str, dict[str, Any]]:
    columns = [
        "id",
        "phase",
        "kind",
        "checksum",
        "checksum_algorithm",
        "status",
        "installed_rank",
        "run_id",
        "started_at",
        "finished_at",
        "duration_ms",
        "kit_sequence",
        "last_error",
    ]
    rows = db.query(f"SELECT {', '.join(columns)} FROM kit_migrations ORDER BY installed_rank")
    return {row[0]: dict(zip(columns, row, strict=True)) for row in rows}


def next_rank(db: Database) -> int:
    return int(db.query_value("SELECT COALESCE(MAX(installed_rank), 0) + 1 FROM kit_migrations") or 1)

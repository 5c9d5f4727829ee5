"""The store of kit's state tables: tables, runs, events and migrations here; jobs and the lock mixed in."""

from __future__ import annotations

import json
from collections.abc import Sequence

from kitbuilder.apply.db import Database
from kitbuilder.apply.state.jobs import JobState
from kitbuilder.apply.state.lease import LeaseState
from kitbuilder.apply.state.records import (
    CHECKSUM_ALGORITHM,
    MIGRATION_STATUSES,
    MigrationRecord,
    RunRecord,
    _int,
    _job_or_tenants,
    installed_by,
    utc_now,
)
from kitbuilder.apply.state.tables import _ADDED_COLUMNS, _lock_ddl, ddl
from kitbuilder.errors import DatabaseError

# The store -------------------------------------------------------------------------------------------------------


class StateStore(JobState, LeaseState):
    """Every read and write of the ``kit_*`` tables for one database connection.

    Backfill jobs (``JobState``) and the lock (``LeaseState``) live in their own modules.
    """

    def __init__(self, db: Database) -> None:
        self.db = db

    # Tables ----------------------------------------------------------------------------------------------------

    def exists(self) -> bool:
        return self.db.table_exists("kit_migrations")

    def ensure_lock_table(self) -> None:
        """SQLite's lease table, the one table created before the lock is held (SQLite serialises DDL)."""
        if self.db.dialect == "sqlite":
            with self.db.transaction():
                self.db.execute(_lock_ddl())

    def ensure_tables(self) -> None:
        """Create or complete every state table; call with the apply lock held."""
        with self.db.transaction():
            for statement in ddl(self.db):
                self.db.execute(statement)
        for table, column, kind in _ADDED_COLUMNS:
            if column not in self.db.columns(table):
                with self.db.transaction():
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
        if self.db.dialect == "postgresql" and not self.db.query_value(
            "SELECT to_regprocedure('kit_sha256(text)') IS NOT NULL"
        ):
            # The portable digest helper backfills may use (SQLite's is a Python function of the connection).
            # Created only when missing: replacing it needs ownership, and concurrent replaces collide.
            self.db.execute(
                "CREATE FUNCTION kit_sha256(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT "
                "AS $$ SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex') $$"
            )

    # Events and runs -------------------------------------------------------------------------------------------

    def record_event(self, run_id: str, event: str, subject: str, detail: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO kit_events (at, run_id, event, subject, detail) VALUES (:at, :run, :event, :subject, :detail)",
            {"at": utc_now(), "run": run_id, "event": event, "subject": subject, "detail": detail},
        )

    def start_run(self, run_id: str, argv: Sequence[str], kit_name: str, kit_sequence: int, kit_sha256: str) -> None:
        """Record a run as running; any run still 'running' was killed (we hold the lock now)."""
        with self.db.transaction():
            self.db.execute("UPDATE kit_runs SET status = 'interrupted' WHERE status = 'running'")
            self.db.execute(
                "INSERT INTO kit_runs (run_id, started_at, argv, kit_name, kit_sequence, kit_sha256, status) "
                "VALUES (:run, :at, :argv, :name, :seq, :sha, 'running')",
                {
                    "run": run_id,
                    "at": utc_now(),
                    "argv": json.dumps(list(argv), separators=(",", ":")),
                    "name": kit_name,
                    "seq": kit_sequence,
                    "sha": kit_sha256,
                },
            )

    def finish_run(self, run_id: str, status: str, report_sha256: str | None) -> None:
        with self.db.transaction():
            self.db.execute(
                "UPDATE kit_runs SET finished_at = :at, report_sha256 = :sha, status = :status WHERE run_id = :run",
                {"at": utc_now(), "sha": report_sha256, "status": status, "run": run_id},
            )

    def recent_runs(self, limit: int = 10) -> list[RunRecord]:
        rows = self.db.query(
            "SELECT run_id, started_at, finished_at, kit_name, kit_sequence, status, report_sha256 "
            f"FROM kit_runs ORDER BY started_at DESC LIMIT {int(limit)}"
        )
        return [
            RunRecord(
                str(r[0]), str(r[1]), r[2], str(r[3]), _int("kit_runs", f"run {r[0]}", "kit_sequence", r[4]), *r[5:]
            )
            for r in rows
        ]

    # Migrations and seeds --------------------------------------------------------------------------------------

    def migrations(self) -> dict[str, MigrationRecord]:
        if not self.exists():
            return {}
        rows = self.db.query(
            "SELECT id, phase, kind, checksum, checksum_algorithm, status, installed_rank, run_id, started_at, "
            "finished_at, duration_ms, kit_sequence, last_error FROM kit_migrations ORDER BY installed_rank"
        )
        records = {}
        for row in rows:
            where = f"row {row[0]}"
            if row[5] not in MIGRATION_STATUSES:
                # Never guessed at: an unknown status read as 'interrupted' was "resolved" by verify alone.
                raise DatabaseError(
                    f"kit_migrations: status of {row[0]} is {str(row[5])[:40]!r}, not one of "
                    f"{', '.join(MIGRATION_STATUSES)}; the state was edited by hand: restore it, or record what is "
                    f'true with `kit repair KIT --db URL --resolve {row[0]} --as succeeded|failed --reason "…"`'
                )
            records[str(row[0])] = MigrationRecord(
                id=str(row[0]),
                phase=str(row[1]),
                kind=str(row[2]),
                checksum=str(row[3]),
                checksum_algorithm=str(row[4]),
                status=str(row[5]),
                installed_rank=_int("kit_migrations", where, "installed_rank", row[6]),
                run_id=str(row[7]),
                started_at=row[8],
                finished_at=row[9],
                duration_ms=_int("kit_migrations", where, "duration_ms", row[10], optional=True),
                kit_sequence=_int("kit_migrations", where, "kit_sequence", row[11]),
                last_error=row[12],
            )
        return records

    def write_migration(
        self,
        *,
        step_id: str,
        phase: str,
        kind: str,
        checksum: str,
        status: str,
        run_id: str,
        started: str,
        duration_ms: int | None,
        error: str | None,
        kit_name: str,
        kit_version: str,
        kit_sequence: int,
        kit_sha256: str,
    ) -> None:
        """Insert or replace a step's row, keeping its installed_rank (call inside the step's transaction)."""
        existing = self.db.query_value("SELECT installed_rank FROM kit_migrations WHERE id = :id", {"id": step_id})
        rank = (
            existing
            if existing is not None
            else self.db.query_value("SELECT COALESCE(MAX(installed_rank), 0) + 1 FROM kit_migrations")
        )
        self.db.execute("DELETE FROM kit_migrations WHERE id = :id", {"id": step_id})
        self.db.execute(
            """INSERT INTO kit_migrations (id, phase, kind, checksum, checksum_algorithm, status, installed_rank,
                   run_id, started_at, finished_at, duration_ms, installed_by, kit_name, kit_version, kit_sequence,
                   kit_sha256, last_error)
               VALUES (:id, :phase, :kind, :checksum, :algorithm, :status, :rank, :run, :started, :finished, :duration,
                       :by, :kit_name, :kit_version, :kit_sequence, :kit_sha256, :error)""",
            {
                "id": step_id,
                "phase": phase,
                "kind": kind,
                "checksum": checksum,
                "algorithm": CHECKSUM_ALGORITHM,
                "status": status,
                "rank": int(rank or 1),
                "run": run_id,
                "started": started,
                "finished": utc_now() if status != "running" else None,
                "duration": duration_ms,
                "by": installed_by(),
                "kit_name": kit_name,
                "kit_version": kit_version,
                "kit_sequence": kit_sequence,
                "kit_sha256": kit_sha256,
                "error": error,
            },
        )

    def mark_reverted(self, step_id: str) -> None:
        self.db.execute(
            "UPDATE kit_migrations SET status = 'reverted', finished_at = :now WHERE id = :id",
            {"now": utc_now(), "id": step_id},
        )

    def accept_checksum(self, step_id: str, checksum: str) -> int:
        changed = self.db.execute(
            "UPDATE kit_migrations SET checksum = :c WHERE id = :id", {"c": checksum, "id": step_id}
        )
        where, params = _job_or_tenants(step_id)
        return changed + self.db.execute(
            f"UPDATE kit_backfill_runs SET checksum = :c WHERE {where}", {"c": checksum, **params}
        )

    def resolve_running(self, step_id: str, status: str) -> int:
        """Record an interrupted (or hand-corrupted, unknown) step's status as the operator found it."""
        return self.db.execute(
            "UPDATE kit_migrations SET status = :s WHERE id = :id AND status NOT IN ('pending', 'succeeded', "
            "'failed', 'reverted')",
            {"s": status, "id": step_id},
        )

"""The one owner of the state tables kit apply keeps in the target database (every ``kit_*`` statement is here).

They are the source of truth for what is applied and how far each backfill
got; every change to them is committed in the same transaction as the work it
records, which is what makes a killed run resumable without double work. Like
alembic's HeadMaintainer owns its version table, the run loop, status, rollback
and repair ask this module and never write state SQL of their own, so all of
them read one truth.

Order matters for concurrency: on PostgreSQL the tables are created only once
the advisory lock is held (two first runs creating them together collide in
the catalog); on SQLite only ``kit_lock`` is created before the lease is taken
(SQLite serialises DDL itself), the rest after.

Rows read back are decoded into frozen values here; a row that cannot be
decoded (hand-edited, corrupted) is a DatabaseError naming the table, the row
and the ``kit repair`` command that fixes it, never a crash.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from kitbuilder.apply.db import Database, Params
from kitbuilder.errors import DatabaseError, UsageError

CHECKSUM_ALGORITHM = "kit-sha256-v1"
MIGRATION_STATUSES = ("pending", "running", "succeeded", "failed", "reverted")
LOCK_NAME = "kit-apply"
ADVISORY_KEY = 0x4B4954  # "KIT"

Statement = tuple[str, Params]


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def installed_by() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


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
        _lock_ddl(),
    ]


# Columns added after the first release: (table, column, DDL type). Added in place to older databases.
_ADDED_COLUMNS = (("kit_backfill_runs", "remaining", "BIGINT"),)


# Decoded rows ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationRecord:
    id: str
    phase: str
    kind: str
    checksum: str
    checksum_algorithm: str
    status: str
    installed_rank: int
    run_id: str
    started_at: str | None
    finished_at: str | None
    duration_ms: int | None
    kit_sequence: int
    last_error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "phase": self.phase,
            "kind": self.kind,
            "checksum": self.checksum,
            "checksumAlgorithm": self.checksum_algorithm,
            "status": self.status,
            "installedRank": self.installed_rank,
            "runId": self.run_id,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "durationMs": self.duration_ms,
            "kitSequence": self.kit_sequence,
            "lastError": self.last_error,
        }


@dataclass(frozen=True)
class JobRecord:
    job: str
    status: str
    checksum: str
    cursor: Any  # a decoded key value; None before the first batch
    rows_processed: int
    rows_failed: int
    batches: int
    pause_reason: str | None
    started_at: str
    updated_at: str
    remaining: int | None


@dataclass(frozen=True)
class JobTotals:
    processed: int = 0
    failed: int = 0
    batches: int = 0


@dataclass(frozen=True)
class LeaseHolder:
    run_id: str
    host: str
    pid: int
    expires_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "host": self.host,
            "pid": self.pid,
            "expiresAt": self.expires_at.replace("+00:00", "Z"),
        }


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    started_at: str
    finished_at: str | None
    kit: str
    sequence: int
    status: str
    report_sha256: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
            "kit": self.kit,
            "sequence": self.sequence,
            "status": self.status,
            "reportSha256": self.report_sha256,
        }


def _repair_hint(job: str) -> str:
    return (
        f'reset it with `kit repair KIT --db URL --reset-cursor {job} --reason "…"` '
        "(the predicate makes a restart safe)"
    )


def key_value(job: str, column: str, value: Any) -> Any:
    """A key read from the job's table as the cursor keeps it: JSON-safe, and a parameter the database compares.

    psycopg returns NUMERIC as Decimal, date/time columns as datetime, UUID as UUID: kept as their exact
    text form, which PostgreSQL casts back to the column's type (parameters are sent untyped).
    """
    if value is None or (isinstance(value, (int, float, str)) and not isinstance(value, bool)):
        return value
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    raise UsageError(
        f"backfill {job}: key column {column} holds {type(value).__name__} values; a backfill pages by an integer, "
        "text, numeric, date/time or UUID key: choose such a column as the job's key"
    )


def job_key(job: str, tenant: str | None) -> str:
    """The ``kit_backfill_runs.job`` of a backfill: its id, or ``ID[tenant=T]`` for a run limited by ``--tenant``.

    Component ids cannot contain ``[``, so a tenant's state never collides with a job's.
    """
    return job if tenant is None else f"{job}[tenant={tenant}]"


def tenant_prefix(job: str) -> str:
    """What every per-tenant ``job_key`` of ``job`` starts with (``ID[tenant=``; ids cannot hold ``[``)."""
    return f"{job}[tenant="


def _job_or_tenants(job: str) -> tuple[str, dict[str, Any]]:
    """A WHERE clause matching a job's own row and every per-tenant row of it (see ``job_key``)."""
    prefix = tenant_prefix(job)
    return "(job = :job OR substr(job, 1, :n) = :scoped)", {"job": job, "n": len(prefix), "scoped": prefix}


def encode_key(value: Any) -> str:
    return json.dumps(value)


def decode_cursor(job: str, text: Any) -> Any:
    """A stored cursor back to a key value; anything else is a DatabaseError naming the repair."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise DatabaseError(
            f"kit_backfill_runs: cursor of backfill {job} is not valid JSON ({str(text)[:40]!r}); {_repair_hint(job)}"
        ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DatabaseError(
            f"kit_backfill_runs: cursor of backfill {job} is {type(value).__name__} {str(text)[:40]}, not a key value; "
            f"{_repair_hint(job)}"
        )
    return value


def _int(table: str, row: str, column: str, value: Any, *, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            return int(str(value))
        except ValueError:
            raise DatabaseError(
                f"{table}: {column} of {row} is {value!r}, not a number; the state was edited by hand, restore it "
                "or ask for `kit repair`"
            ) from None
    return value


# The store -------------------------------------------------------------------------------------------------------


class StateStore:
    """Every read and write of the ``kit_*`` tables for one database connection."""

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

    # Backfill jobs ---------------------------------------------------------------------------------------------

    def _job_tables(self) -> bool:
        return self.db.table_exists("kit_backfill_runs")

    def jobs(self) -> list[JobRecord]:
        if not self._job_tables():
            return []
        return [self._job(row) for row in self.db.query(_JOB_SELECT + " ORDER BY job")]

    def job(self, job: str) -> JobRecord | None:
        if not self._job_tables():
            return None
        rows = self.db.query(_JOB_SELECT + " WHERE job = :job", {"job": job})
        return self._job(rows[0]) if rows else None

    def _job(self, row: tuple[Any, ...]) -> JobRecord:
        job = str(row[0])
        where = f"backfill {job}"
        return JobRecord(
            job=job,
            status=str(row[1]),
            checksum=str(row[2]),
            cursor=decode_cursor(job, row[3]),
            rows_processed=_int("kit_backfill_runs", where, "rows_processed", row[4]),
            rows_failed=_int("kit_backfill_runs", where, "rows_failed", row[5]),
            batches=_int("kit_backfill_runs", where, "batches", row[6]),
            pause_reason=row[7],
            started_at=str(row[8]),
            updated_at=str(row[9]),
            remaining=_int("kit_backfill_runs", where, "remaining", row[10], optional=True),
        )

    def save_job(
        self,
        *,
        job: str,
        kit_sha256: str,
        checksum: str,
        status: str,
        cursor: Any,
        batch_size: int,
        totals: JobTotals,
        started_at: str,
        remaining: int | None,
        reason: str | None = None,
    ) -> None:
        """Write the job's whole row (call inside a transaction)."""
        now = utc_now()
        self.db.execute("DELETE FROM kit_backfill_runs WHERE job = :job", {"job": job})
        self.db.execute(
            """INSERT INTO kit_backfill_runs (job, kit_sha256, checksum, status, pause_reason, cursor_value, batch_size,
                   rows_processed, rows_failed, batches, started_at, updated_at, finished_at, remaining)
               VALUES (:job, :kit, :checksum, :status, :reason, :cursor, :batch, :processed, :failed, :batches,
                       :started, :now, :finished, :remaining)""",
            {
                "job": job,
                "kit": kit_sha256,
                "checksum": checksum,
                "status": status,
                "reason": reason,
                "cursor": encode_key(cursor) if cursor is not None else None,
                "batch": batch_size,
                "processed": totals.processed,
                "failed": totals.failed,
                "batches": totals.batches,
                "started": started_at,
                "now": now,
                "finished": now if status == "finished" else None,
                "remaining": remaining,
            },
        )

    def update_job_totals(self, job: str, totals: JobTotals, remaining: int | None) -> None:
        """Totals changed without moving the cursor (a quarantined row retried); inside a transaction."""
        self.db.execute(
            "UPDATE kit_backfill_runs SET rows_processed = :processed, rows_failed = :failed, remaining = :remaining, "
            "updated_at = :now WHERE job = :job",
            {
                "processed": totals.processed,
                "failed": totals.failed,
                "remaining": remaining,
                "now": utc_now(),
                "job": job,
            },
        )

    def batch_statements(
        self,
        *,
        job: str,
        run_id: str,
        cursor_from: Any,
        cursor_to: Any,
        totals: JobTotals,
        remaining: int | None,
        size: int,
        processed: int,
        failed: int,
        duration_ms: int,
    ) -> list[Statement]:
        """The state writes that commit with a batch: the job's cursor and totals, and the batch record.

        Returned rather than run so PostgreSQL can pipeline them with the batch (one round trip).
        """
        now = utc_now()
        return [
            (
                "UPDATE kit_backfill_runs SET cursor_value = :cursor, rows_processed = :processed, "
                "rows_failed = :failed, batches = :batches, remaining = :remaining, updated_at = :now WHERE job = :job",
                {
                    "cursor": encode_key(cursor_to),
                    "processed": totals.processed,
                    "failed": totals.failed,
                    "batches": totals.batches,
                    "remaining": remaining,
                    "now": now,
                    "job": job,
                },
            ),
            (
                "INSERT INTO kit_backfill_batches (job, run_id, cursor_from, cursor_to, batch_size, rows_processed, "
                "rows_failed, duration_ms, at) VALUES (:job, :run, :cursor_from, :cursor_to, :size, :processed, "
                ":failed, :duration, :at)",
                {
                    "job": job,
                    "run": run_id,
                    "cursor_from": encode_key(cursor_from) if cursor_from is not None else None,
                    "cursor_to": encode_key(cursor_to),
                    "size": size,
                    "processed": processed,
                    "failed": failed,
                    "duration": duration_ms,
                    "at": now,
                },
            ),
        ]

    def quarantine(self, *, job: str, key: Any, error: str, run_id: str) -> None:
        """Record (or refresh) a failing row; one row per key, however often it is retried."""
        encoded = encode_key(key)
        self.db.execute(
            "DELETE FROM kit_backfill_quarantine WHERE job = :job AND row_key = :key", {"job": job, "key": encoded}
        )
        self.db.execute(
            "INSERT INTO kit_backfill_quarantine (job, row_key, error, run_id, at) "
            "VALUES (:job, :key, :error, :run, :at)",
            {"job": job, "key": encoded, "error": error, "run": run_id, "at": utc_now()},
        )

    def release_quarantine(self, *, job: str, key: Any) -> None:
        self.db.execute(
            "DELETE FROM kit_backfill_quarantine WHERE job = :job AND row_key = :key",
            {"job": job, "key": encode_key(key)},
        )

    def quarantined_keys(self, job: str) -> list[Any]:
        """Keys of the rows quarantined for ``job``, decoded; a key that does not decode is a DatabaseError."""
        keys = []
        for (text,) in self.db.query(
            "SELECT row_key FROM kit_backfill_quarantine WHERE job = :job ORDER BY id", {"job": job}
        ):
            try:
                keys.append(json.loads(text))
            except (TypeError, ValueError):
                raise DatabaseError(
                    f"kit_backfill_quarantine: row_key {str(text)[:40]!r} of backfill {job} is not valid JSON; "
                    "delete that row (the row it names is retried by the next run)"
                ) from None
        return keys

    def revert_job(self, job: str) -> None:
        where, params = _job_or_tenants(job)  # per-tenant states are reverted with the job
        self.db.execute(
            "UPDATE kit_backfill_runs SET status = 'reverted', cursor_value = NULL, rows_processed = 0, "
            f"rows_failed = 0, batches = 0, remaining = NULL, updated_at = :now WHERE {where}",
            {"now": utc_now(), **params},
        )
        self.db.execute(f"DELETE FROM kit_backfill_quarantine WHERE {where}", params)

    def finish_tenant_states(self, job: str) -> int:
        """A full run of ``job`` finished: its per-tenant states still open are done too (inside a transaction).

        The full run's scope holds every tenant's rows, so a tenant run left active or paused (interrupted,
        or paused by its error rate) must not stay open in `kit status` or count as pending work.
        """
        prefix = tenant_prefix(job)
        return self.db.execute(
            "UPDATE kit_backfill_runs SET status = 'finished', pause_reason = NULL, remaining = 0, updated_at = :now, "
            "finished_at = :now WHERE substr(job, 1, :n) = :scoped AND status IN ('active', 'paused', 'failed')",
            {"now": utc_now(), "n": len(prefix), "scoped": prefix},
        )

    def reset_cursor(self, job: str) -> int:
        where, params = _job_or_tenants(job)
        return self.db.execute(
            f"UPDATE kit_backfill_runs SET cursor_value = NULL, updated_at = :now WHERE {where}",
            {"now": utc_now(), **params},
        )

    def job_rate(self, job: str) -> float | None:
        """Rows per second over the job's batches in its latest run (None before any batch)."""
        row = self.db.query(
            "SELECT SUM(rows_processed + rows_failed), SUM(duration_ms) FROM kit_backfill_batches "
            "WHERE job = :job AND run_id = (SELECT run_id FROM kit_backfill_batches WHERE job = :job "
            "ORDER BY id DESC LIMIT 1)",
            {"job": job},
        )
        rows, millis = row[0] if row else (None, None)
        if not rows:
            return None
        # Batches are timed in whole milliseconds: a fast run sums to 0, which means "under 1 ms".
        return float(rows) * 1000.0 / max(float(millis or 0), 1.0)

    # The SQLite lease and the PostgreSQL advisory lock ---------------------------------------------------------

    def lease_holder(self) -> LeaseHolder | None:
        if self.db.dialect != "sqlite" or not self.db.table_exists("kit_lock"):
            return None
        rows = self.db.query("SELECT holder, host, pid, expires_at FROM kit_lock WHERE name = :n", {"n": LOCK_NAME})
        if not rows:
            return None
        holder, host, pid, expires = rows[0]
        return LeaseHolder(str(holder), str(host), _int("kit_lock", "the lease", "pid", pid), str(expires))

    def try_take_lease(self, run_id: str, *, lease_seconds: float, alive: Any) -> bool:
        """Take the SQLite lease if free, expired, or held by a dead process on this host; in one IMMEDIATE tx."""
        now = datetime.now(UTC)
        with self.db.transaction():
            holder = self.lease_holder()
            if holder is not None:
                # On this host the pid says exactly whether the holder lives, so a live run is never taken over
                # because its lease ran out (a long statement renews nothing); expiry is for other hosts' leases.
                if holder.host == socket.gethostname():
                    stale = not alive(holder.pid)
                else:
                    stale = holder.expires_at < now.isoformat()
                if holder.run_id != run_id and not stale:
                    return False
                self.db.execute("DELETE FROM kit_lock WHERE name = :n", {"n": LOCK_NAME})
            self.db.execute(
                "INSERT INTO kit_lock (name, holder, host, pid, expires_at) VALUES (:n, :h, :host, :pid, :exp)",
                {
                    "n": LOCK_NAME,
                    "h": run_id,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "exp": (now + timedelta(seconds=lease_seconds)).isoformat(),
                },
            )
        return True

    def renew_lease(self, run_id: str, *, lease_seconds: float) -> bool:
        """Extend this run's lease; False when it no longer holds it (released by an operator, taken over)."""
        expires = (datetime.now(UTC) + timedelta(seconds=lease_seconds)).isoformat()
        with self.db.transaction():
            changed = self.db.execute(
                "UPDATE kit_lock SET expires_at = :e WHERE name = :n AND holder = :h",
                {"e": expires, "n": LOCK_NAME, "h": run_id},
            )
        return changed == 1

    def release_lease(self, run_id: str) -> None:
        with self.db.transaction():
            self.db.execute("DELETE FROM kit_lock WHERE name = :n AND holder = :h", {"n": LOCK_NAME, "h": run_id})

    def force_release_lease(self) -> LeaseHolder | None:
        """Remove whatever lease is recorded (kit repair --release-lock); returns what was removed."""
        holder = self.lease_holder()
        if holder is not None:
            self.db.execute("DELETE FROM kit_lock WHERE name = :n", {"n": LOCK_NAME})
        return holder

    def try_advisory_lock(self) -> bool:
        return bool(self.db.query_value("SELECT pg_try_advisory_lock(:k)", {"k": ADVISORY_KEY}))

    def advisory_unlock(self) -> None:
        self.db.query("SELECT pg_advisory_unlock(:k)", {"k": ADVISORY_KEY})

    def advisory_holder(self) -> str | None:
        """Who holds the PostgreSQL advisory lock: 'pid N (application, since T)'."""
        rows = self.db.query(
            "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = :k",
            {"k": ADVISORY_KEY},
        )
        if not rows:
            return None
        pid, application, since = rows[0]
        return f"server pid {pid} ({application or 'no application name'}, connected since {since})"


_JOB_SELECT = (
    "SELECT job, status, checksum, cursor_value, rows_processed, rows_failed, batches, pause_reason, started_at, "
    "updated_at, remaining FROM kit_backfill_runs"
)

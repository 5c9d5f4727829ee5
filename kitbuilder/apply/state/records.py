"""Values decoded from the ``kit_*`` tables, and the codecs of what they hold (keys, cursors, counters).

A row that cannot be decoded (hand-edited, corrupted) is a DatabaseError naming
the table, the row and the ``kit repair`` command that fixes it, never a crash.
"""

from __future__ import annotations

import getpass
import json
import socket
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

from kitbuilder.apply.db import Params
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
class RangeRecord:
    """One key range of a backfill split for parallel workers: keys in (lo, hi], done up to ``cursor``.

    ``lo`` None is the start of the key space, ``hi`` None its end, ``cursor`` None: nothing done yet.
    """

    job: str
    range_no: int
    lo: Any
    hi: Any
    cursor: Any
    rows_processed: int
    rows_failed: int
    batches: int


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


def encode_key_sql(expression: str) -> str:
    """PostgreSQL: the text ``encode_key(key_value(k))`` stores, computed by the server for a key expression.

    Integers are JSON numbers; every other key (text, numeric, date/time, UUID) a JSON string of its text
    form, which ``decode_cursor`` reads back as the str PostgreSQL casts to the column's type. Lets a batch
    record its own cursor in the statement that updates its rows.
    """
    return (
        f"CASE WHEN pg_typeof({expression}) IN ('smallint'::regtype, 'integer'::regtype, 'bigint'::regtype) "
        f"THEN CAST({expression} AS TEXT) ELSE CAST(to_jsonb(CAST({expression} AS TEXT)) AS TEXT) END"
    )


def decode_cursor(job: str, text: Any, *, field: str = "kit_backfill_runs: cursor") -> Any:
    """A stored key (a cursor, a range bound) back to a key value; anything else is a DatabaseError naming the repair.

    ``field`` names where the text was read (``kit_backfill_ranges: lo_value``), for the message.
    """
    if text is None:
        return None
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):  # nested past the limit: not a key either
        raise DatabaseError(
            f"{field} of backfill {job} is not valid JSON ({str(text)[:40]!r}); {_repair_hint(job)}"
        ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise DatabaseError(
            f"{field} of backfill {job} is {type(value).__name__} {str(text)[:40]}, not a key value; "
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

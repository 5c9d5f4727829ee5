"""Backfill job state: the job rows, their key ranges, batches and quarantine (part of the one state owner).

Parallel workers of one job write only increments to the job's row and their
own range's row, in the transaction of each batch, so no worker's count
overwrites another's and a kill loses nothing committed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from kitbuilder.apply.db import Database
from kitbuilder.apply.state.records import (
    JobRecord,
    JobTotals,
    RangeRecord,
    Statement,
    _int,
    _job_or_tenants,
    decode_cursor,
    encode_key,
    tenant_prefix,
    utc_now,
)
from kitbuilder.errors import DatabaseError


class JobState:
    """Every read and write of kit_backfill_runs, _ranges, _batches and _quarantine (mixed into StateStore)."""

    db: Database

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
        range_no: int | None,
        cursor_from: Any,
        cursor_to: Any,
        delta: JobTotals,
        size: int,
        processed: int,
        failed: int,
        duration_ms: int,
    ) -> list[Statement]:
        """The state writes that commit with a batch: the job's totals and cursor, and the batch record.

        Totals move by ``delta`` (increments, so parallel workers never overwrite each other's counts).
        The cursor goes to the job's row, or with ``range_no`` to that range's row of a split job.
        Returned rather than run so PostgreSQL can pipeline them with the batch (one round trip).
        """
        now = utc_now()
        counts = {"dp": delta.processed, "df": delta.failed, "db": delta.batches, "now": now, "job": job}
        cursor = encode_key(cursor_to)
        job_cursor = "cursor_value = :cursor, " if range_no is None else ""
        statements: list[Statement] = [
            (
                f"UPDATE kit_backfill_runs SET {job_cursor}rows_processed = rows_processed + :dp, "
                "rows_failed = rows_failed + :df, batches = batches + :db, remaining = CASE WHEN remaining IS NULL "
                "THEN NULL WHEN remaining > :dp THEN remaining - :dp ELSE 0 END, updated_at = :now WHERE job = :job",
                {**counts, "cursor": cursor} if range_no is None else counts,
            ),
            (
                "INSERT INTO kit_backfill_batches (job, run_id, cursor_from, cursor_to, batch_size, rows_processed, "
                "rows_failed, duration_ms, at) VALUES (:job, :run, :cursor_from, :cursor_to, :size, :processed, "
                ":failed, :duration, :at)",
                {
                    "job": job,
                    "run": run_id,
                    "cursor_from": encode_key(cursor_from) if cursor_from is not None else None,
                    "cursor_to": cursor,
                    "size": size,
                    "processed": processed,
                    "failed": failed,
                    "duration": duration_ms,
                    "at": now,
                },
            ),
        ]
        if range_no is not None:
            statements.append(
                (
                    "UPDATE kit_backfill_ranges SET cursor_value = :cursor, rows_processed = rows_processed + :dp, "
                    "rows_failed = rows_failed + :df, batches = batches + :db, updated_at = :now "
                    "WHERE job = :job AND range_no = :range",
                    {**counts, "cursor": cursor, "range": range_no},
                )
            )
        return statements

    def batch_record_ctes(
        self, *, job: str, run_id: str, range_no: int | None, cursor_from: Any, source: str
    ) -> tuple[str, dict[str, Any]]:
        """PostgreSQL: what ``batch_statements`` writes, as data-modifying CTEs of the batch's own statement.

        ``source`` names a CTE of that statement holding one row per batch (none for an empty one) with
        ``cursor_to`` (the last key, as ``encode_key_sql`` makes it), ``size``, ``processed`` and
        ``duration_ms``. Rows, cursor, totals and the batch record then commit as one statement: one round
        trip, and nothing a kill could separate. Returns the text (``, kit_state_… AS (…)`` to append to a
        WITH list) and its parameters (``kit_state_*``, clear of the job's own).
        """
        params: dict[str, Any] = {
            "kit_state_job": job,
            "kit_state_run": run_id,
            "kit_state_from": encode_key(cursor_from) if cursor_from is not None else None,
            "kit_state_now": utc_now(),
        }
        job_cursor = "cursor_value = d.cursor_to, " if range_no is None else ""
        text = (
            f", kit_state_job AS (UPDATE kit_backfill_runs SET {job_cursor}"
            "rows_processed = rows_processed + d.processed, batches = batches + 1, "
            "remaining = CASE WHEN remaining IS NULL THEN NULL WHEN remaining > d.processed "
            "THEN remaining - d.processed ELSE 0 END, updated_at = :kit_state_now "
            f"FROM {source} d WHERE job = :kit_state_job RETURNING 1), "
            "kit_state_batch AS (INSERT INTO kit_backfill_batches (job, run_id, cursor_from, cursor_to, batch_size, "
            "rows_processed, rows_failed, duration_ms, at) SELECT :kit_state_job, :kit_state_run, "
            f"CAST(:kit_state_from AS TEXT), d.cursor_to, d.size, d.processed, 0, d.duration_ms, :kit_state_now "
            f"FROM {source} d RETURNING 1)"
        )
        if range_no is not None:
            params["kit_state_range"] = range_no
            text += (
                ", kit_state_range AS (UPDATE kit_backfill_ranges SET cursor_value = d.cursor_to, "
                "rows_processed = rows_processed + d.processed, batches = batches + 1, "
                f"updated_at = :kit_state_now FROM {source} d WHERE job = :kit_state_job "
                "AND range_no = :kit_state_range RETURNING 1)"
            )
        return text, params

    # Key ranges of a split job ---------------------------------------------------------------------------------

    def _range_table(self) -> bool:
        return self.db.table_exists("kit_backfill_ranges")

    def ranges(self, job: str) -> list[RangeRecord]:
        """The key ranges recorded for ``job``, in key order; empty when it is not split."""
        if not self._range_table():
            return []
        rows = self.db.query(
            "SELECT range_no, lo_value, hi_value, cursor_value, rows_processed, rows_failed, batches "
            "FROM kit_backfill_ranges WHERE job = :job ORDER BY range_no",
            {"job": job},
        )
        out = []
        for number, lo, hi, cursor, processed, failed, batches in rows:
            where = f"range {number} of backfill {job}"
            out.append(
                RangeRecord(
                    job=job,
                    range_no=_int("kit_backfill_ranges", where, "range_no", number),
                    lo=decode_cursor(job, lo, field="kit_backfill_ranges: lo_value"),
                    hi=decode_cursor(job, hi, field="kit_backfill_ranges: hi_value"),
                    cursor=decode_cursor(job, cursor, field="kit_backfill_ranges: cursor_value"),
                    rows_processed=_int("kit_backfill_ranges", where, "rows_processed", processed),
                    rows_failed=_int("kit_backfill_ranges", where, "rows_failed", failed),
                    batches=_int("kit_backfill_ranges", where, "batches", batches),
                )
            )
        return out

    def record_ranges(self, job: str, bounds: Sequence[tuple[Any, Any]]) -> None:
        """Record ``job``'s key ranges (lo exclusive, hi inclusive) before its first batch; inside a transaction.

        Only for a job with no ranges yet: a rerun keeps the ones recorded.
        """
        now = utc_now()
        for number, (lo, hi) in enumerate(bounds):
            self.db.execute(
                "INSERT INTO kit_backfill_ranges (job, range_no, lo_value, hi_value, updated_at) "
                "VALUES (:job, :n, :lo, :hi, :now)",
                {
                    "job": job,
                    "n": number,
                    "lo": None if lo is None else encode_key(lo),
                    "hi": None if hi is None else encode_key(hi),
                    "now": now,
                },
            )

    def drop_ranges(self, job: str) -> None:
        """``job`` finished: its ranges go (the next run of it plans afresh); inside a transaction."""
        if self._range_table():
            self.db.execute("DELETE FROM kit_backfill_ranges WHERE job = :job", {"job": job})

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
            except (TypeError, ValueError, RecursionError):  # nested past the limit: not a key either
                raise DatabaseError(
                    f"kit_backfill_quarantine: row_key {str(text)[:40]!r} of backfill {job} is not valid JSON; "
                    "delete that row (the row it names is retried by the next run)"
                ) from None
        return keys

    def revert_job(self, job: str) -> None:
        where, params = _job_or_tenants(job)  # per-tenant states are reverted with the job
        if self._range_table():
            self.db.execute(f"DELETE FROM kit_backfill_ranges WHERE {where}", params)
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
        if self._range_table():
            scoped = {"n": len(prefix), "scoped": prefix}
            self.db.execute("DELETE FROM kit_backfill_ranges WHERE substr(job, 1, :n) = :scoped", scoped)
        return self.db.execute(
            "UPDATE kit_backfill_runs SET status = 'finished', pause_reason = NULL, remaining = 0, updated_at = :now, "
            "finished_at = :now WHERE substr(job, 1, :n) = :scoped AND status IN ('active', 'paused', 'failed')",
            {"now": utc_now(), "n": len(prefix), "scoped": prefix},
        )

    def reset_cursor(self, job: str) -> int:
        """Every cursor of ``job`` (and its per-tenant states) back to the start; split jobs keep their ranges."""
        where, params = _job_or_tenants(job)
        if self._range_table():
            self.db.execute(
                f"UPDATE kit_backfill_ranges SET cursor_value = NULL, updated_at = :now WHERE {where}",
                {"now": utc_now(), **params},
            )
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


_JOB_SELECT = (
    "SELECT job, status, checksum, cursor_value, rows_processed, rows_failed, batches, pause_reason, started_at, "
    "updated_at, remaining FROM kit_backfill_runs"
)

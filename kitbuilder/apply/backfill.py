"""Batched, resumable backfills over key ranges (keyset pagination).

Each batch selects the next ``batch_size`` keys after the cursor whose rows
still match the job's predicate, updates exactly the range [first, last] of
those keys (still filtered by the predicate), and advances the cursor in the
same transaction. A killed run therefore resumes at the last committed
cursor: no row is processed twice, none skipped. A failing batch is bisected
down to single rows; a failing row is quarantined with its error and the job
moves on, unless --stop-on-error, or the error rate passes its threshold,
which pauses the job.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

from kitbuilder.apply import checks as checkmod
from kitbuilder.apply import db as dbmod
from kitbuilder.apply import state
from kitbuilder.apply.checks import CheckResult
from kitbuilder.apply.context import RunContext
from kitbuilder.apply.plan import Step
from kitbuilder.apply.results import BackfillResult, DryBackfill
from kitbuilder.core.jobs import Check, named_parameters
from kitbuilder.errors import CheckFailedError, DatabaseError, UsageError


@dataclass
class Totals:
    processed: int = 0
    failed: int = 0
    batches: int = 0


class _RowFailure(Exception):
    def __init__(self, key: Any, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class BackfillJob:
    def __init__(self, ctx: RunContext, step: Step) -> None:
        self.ctx = ctx
        self.step = step
        job = self.job = step.backfill
        self.table: str = job.table
        self.key: str = job.key
        self.predicate: str = job.predicate
        self.tenant_column: str | None = job.tenant_column
        options = ctx.options
        self.batch_size = options.batch_size or job.batch_size
        threshold = options.error_rate_threshold
        self.error_rate = threshold if threshold is not None else job.error_rate_threshold
        self.min_sample = options.min_sample or job.min_sample
        # On PostgreSQL a `set:` job finds and updates each batch in one statement (one round trip).
        self._fused = ctx.db.dialect == "postgresql" and bool(job.set)
        if options.tenant is not None and job.tenant_problem is not None:
            # validate_plan refuses this before the run's first statement; kept as the last line of defence.
            raise UsageError(f"--tenant given, but backfill {step.id} {job.tenant_problem}")
        # A job limited to one tenant keeps its own cursor and status, so a later full apply (or another
        # tenant) still processes every other row.
        self.state_key = step.id if options.tenant is None else f"{step.id}[tenant={options.tenant}]"

    # SQL -------------------------------------------------------------------------------------------------------

    def statement_text(self) -> str:
        """The UPDATE each batch runs (``:lo``/``:hi`` are the batch's first and last key), for dry runs."""
        if self.job.update is not None:
            return self.job.update.strip()
        assignments = ", ".join(f"{column} = {expression}" for column, expression in self.job.set)
        return (
            f"UPDATE {self.table} SET {assignments} WHERE {self.key} >= :lo AND {self.key} <= :hi "
            f"AND ({self.predicate}){self._tenant_filter()}"
        )

    def _tenant_filter(self) -> str:
        return f" AND {self.tenant_column} = :tenant" if self.ctx.options.tenant is not None else ""

    def _params(self, **extra: Any) -> dict[str, Any]:
        params = dict(extra)
        if self.ctx.options.tenant is not None:
            params["tenant"] = self.ctx.options.tenant
        return params

    def _update_params(self, **extra: Any) -> dict[str, Any]:
        # An update statement that uses :tenant gets NULL on a full run, so it can say
        # `(CAST(:tenant AS TEXT) IS NULL OR tenant = :tenant)` and serve both.
        assert self.job.update is not None
        params = self._params(**extra)
        if "tenant" in named_parameters(self.job.update):
            params.setdefault("tenant", None)
        return params

    def remaining(self) -> int:
        sql = f"SELECT COUNT(*) FROM {self.table} WHERE ({self.predicate}){self._tenant_filter()}"
        return int(self.ctx.db.query_value(sql, self._params()) or 0)

    def remaining_by_tenant(self) -> dict[str, int]:
        if not self.tenant_column:
            return {"*": self.remaining()}
        sql = (
            f"SELECT {self.tenant_column}, COUNT(*) FROM {self.table} WHERE ({self.predicate}){self._tenant_filter()} "
            f"GROUP BY {self.tenant_column} ORDER BY {self.tenant_column}"
        )
        return {str(tenant): int(count) for tenant, count in self.ctx.db.query(sql, self._params())}

    def _next_range(self, cursor: Any) -> tuple[Any, Any, int]:
        """(first key, last key, rows) of the next batch after ``cursor``; rows is 0 when done.

        Only the bounds travel back, not every key: a batch costs one small
        round trip to find and one UPDATE to apply.
        """
        after = f" AND {self.key} > :cursor" if cursor is not None else ""
        sql = (
            f"SELECT MIN(kit_k), MAX(kit_k), COUNT(*) FROM (SELECT {self.key} AS kit_k FROM {self.table} "
            f"WHERE ({self.predicate}){after}{self._tenant_filter()} ORDER BY {self.key} "
            f"LIMIT {int(self.batch_size)}) AS kit_batch"
        )
        params = self._params(cursor=cursor) if cursor is not None else self._params()
        first, last, count = self.ctx.db.query(sql, params)[0]
        return first, last, int(count)

    def _keys_between(self, first: Any, last: Any) -> list[Any]:
        sql = (
            f"SELECT {self.key} FROM {self.table} WHERE {self.key} >= :lo AND {self.key} <= :hi "
            f"AND ({self.predicate}){self._tenant_filter()} ORDER BY {self.key}"
        )
        return [row[0] for row in self.ctx.db.query(sql, self._params(lo=first, hi=last))]

    def _update_range(self, lo: Any, hi: Any) -> int:
        job = self.job
        if job.update is not None:
            return self.ctx.db.execute(job.update, self._update_params(lo=lo, hi=hi))
        assignments = ", ".join(f"{column} = {expression}" for column, expression in job.set)
        sql = (
            f"UPDATE {self.table} SET {assignments} WHERE {self.key} >= :lo AND {self.key} <= :hi "
            f"AND ({self.predicate}){self._tenant_filter()}"
        )
        return self.ctx.db.execute(sql, self._params(lo=lo, hi=hi))

    # State -----------------------------------------------------------------------------------------------------

    def load_state(self) -> tuple[str | None, Any, Totals]:
        rows = self.ctx.db.query(
            "SELECT status, cursor_value, rows_processed, rows_failed, batches, checksum FROM kit_backfill_runs "
            "WHERE job = :job",
            {"job": self.state_key},
        )
        if not rows:
            return None, None, Totals()
        status, cursor, processed, failed, batches, checksum = rows[0]
        if checksum != self.step.checksum and status != "reverted":
            raise DatabaseError(
                f"backfill {self.step.id}: job definition changed since it started (checksum {checksum[:16]}…, "
                f"kit has {self.step.checksum[:16]}…); run `kit repair KIT --db URL --accept-checksum {self.step.id}`"
            )
        if status == "reverted":
            return None, None, Totals()
        return status, (json.loads(cursor) if cursor is not None else None), Totals(processed, failed, batches)

    def _save(self, status: str, cursor: Any, totals: Totals, reason: str | None = None) -> None:
        now = state.utc_now()
        self.ctx.db.execute("DELETE FROM kit_backfill_runs WHERE job = :job", {"job": self.state_key})
        self.ctx.db.execute(
            """INSERT INTO kit_backfill_runs (job, kit_sha256, checksum, status, pause_reason, cursor_value, batch_size,
                   rows_processed, rows_failed, batches, started_at, updated_at, finished_at)
               VALUES (:job, :kit, :checksum, :status, :reason, :cursor, :batch, :processed, :failed, :batches,
                       :started, :now, :finished)""",
            {
                "job": self.state_key,
                "kit": self.ctx.kit_sha256,
                "checksum": self.step.checksum,
                "status": status,
                "reason": reason,
                "cursor": json.dumps(cursor) if cursor is not None else None,
                "batch": self.batch_size,
                "processed": totals.processed,
                "failed": totals.failed,
                "batches": totals.batches,
                "started": self._started,
                "now": now,
                "finished": now if status == "finished" else None,
            },
        )

    def _progress_statements(
        self, cursor_from: Any, cursor: Any, totals: Totals, size: int, processed: int, failed: int, clock: float
    ) -> list[tuple[str, dict[str, Any] | None]]:
        """The two state writes that commit with each batch: the job's cursor/totals and the batch record."""
        now = state.utc_now()
        return [
            (
                "UPDATE kit_backfill_runs SET cursor_value = :cursor, rows_processed = :processed, "
                "rows_failed = :failed, batches = :batches, updated_at = :now WHERE job = :job",
                {
                    "cursor": json.dumps(cursor),
                    "processed": totals.processed,
                    "failed": totals.failed,
                    "batches": totals.batches,
                    "now": now,
                    "job": self.state_key,
                },
            ),
            (
                "INSERT INTO kit_backfill_batches (job, run_id, cursor_from, cursor_to, batch_size, rows_processed, "
                "rows_failed, duration_ms, at) VALUES (:job, :run, :cursor_from, :cursor_to, :size, :processed, "
                ":failed, :duration, :at)",
                {
                    "job": self.state_key,
                    "run": self.ctx.run_id,
                    "cursor_from": json.dumps(cursor_from) if cursor_from is not None else None,
                    "cursor_to": json.dumps(cursor),
                    "size": size,
                    "processed": processed,
                    "failed": failed,
                    "duration": int((time.monotonic() - clock) * 1000),
                    "at": now,
                },
            ),
        ]

    def _raise_unless_row_failure(self, exc: Exception, cursor: Any) -> None:
        """Let a failed batch be bisected only when the database rejected rows; anything else propagates."""
        if not dbmod.is_database_error(exc):
            raise exc
        if dbmod.is_connection_lost(exc):
            raise DatabaseError(
                f"database connection lost during backfill {self.step.id} at {self.key}={json.dumps(cursor)}: "
                f"{dbmod.describe(exc)}; rerun kit apply to resume"
            ) from exc

    def _fused_batch(self, cursor: Any, totals: Totals, run_totals: Totals) -> tuple[Any, bool]:
        """Find and apply the next batch in one statement; returns (new cursor, finished)."""
        db = self.ctx.db
        clock = time.monotonic()
        after = f" AND {self.key} > :cursor" if cursor is not None else ""
        assignments = ", ".join(f"{column} = {expression}" for column, expression in self.job.set)
        sql = (
            f"WITH kit_batch AS (SELECT {self.key} AS kit_k FROM {self.table} WHERE ({self.predicate}){after}"
            f"{self._tenant_filter()} ORDER BY {self.key} LIMIT {int(self.batch_size)}), "
            "kit_bounds AS (SELECT MIN(kit_k) AS lo, MAX(kit_k) AS hi, COUNT(*) AS n FROM kit_batch), "
            f"kit_updated AS (UPDATE {self.table} SET {assignments} WHERE {self.key} >= (SELECT lo FROM kit_bounds) "
            f"AND {self.key} <= (SELECT hi FROM kit_bounds) AND ({self.predicate}){self._tenant_filter()} RETURNING 1) "
            "SELECT lo, hi, n, (SELECT COUNT(*) FROM kit_updated) FROM kit_bounds"
        )
        params = self._params(cursor=cursor) if cursor is not None else self._params()
        try:
            with db.transaction():
                first, last, count, changed = db.query(sql, params)[0]
                if not count:
                    return cursor, True
                updated = Totals(totals.processed + changed, totals.failed, totals.batches + 1)
                db.execute_batch(self._progress_statements(cursor, last, updated, count, changed, 0, clock))
        except Exception as exc:
            self._raise_unless_row_failure(exc, cursor)
            # Some row in the batch fails: find the batch again and bisect it the portable way.
            first, last, count = self._next_range(cursor)
            return self._process(first, last, count, cursor, totals, run_totals), False
        totals.processed, totals.batches = updated.processed, updated.batches
        run_totals.processed += changed
        run_totals.batches += 1
        return last, False

    # Running ---------------------------------------------------------------------------------------------------

    def _job_checks(self, which: str, checks: tuple[Check, ...], book: checkmod.CheckBook) -> list[CheckResult]:
        """Run the job's pre_checks or post_checks; a failing halt check stops the run (exit 10), recorded."""
        db = self.ctx.db
        results = []
        for check in checks:
            result = checkmod.evaluate(db, check, book)
            results.append(result)
            outcome = "passed" if result.passed else f"FAILED ({result.on_fail})"
            with db.transaction():
                state.record_event(
                    db,
                    self.ctx.run_id,
                    "check",
                    self.step.id,
                    f"{which} {result.id}: {outcome}; observed {result.observed}, expected {result.expected}",
                )
            if not result.passed and result.on_fail == "halt":
                raise CheckFailedError(checkmod.failure_message(result, f"backfill {self.step.id}: {which} "))
        return results

    def run(self) -> BackfillResult:
        db = self.ctx.db
        status, cursor, totals = self.load_state()
        started_row = db.query_value(
            "SELECT started_at FROM kit_backfill_runs WHERE job = :job", {"job": self.state_key}
        )
        self._started = started_row or state.utc_now()
        remaining_before = self.remaining()
        result = BackfillResult(
            id=self.step.id,
            phase=self.step.phase,
            checksum=self.step.checksum,
            table=self.table,
            batch_size=self.batch_size,
            remaining_before=remaining_before,
            status="skipped",
            remaining_after=0,
            rows_processed=totals.processed,
            rows_failed=totals.failed,
            reason="already finished",
            metric=self.job.metric,
            tenant=self.ctx.options.tenant,
        )
        if status == "finished" and remaining_before == 0:
            return result
        # pre_checks guard the first batch of this run; their "before" counts serve the post_checks.
        book = checkmod.CheckBook(changed=True)
        checkmod.measure_before(db, self.job.pre_checks + self.job.post_checks, book)
        pre_results = self._job_checks("pre_check", self.job.pre_checks, book)
        resumed_from = cursor
        with db.transaction():
            self._save("active", cursor, totals)
            state.record_event(
                db,
                self.ctx.run_id,
                "backfill",
                self.step.id,
                f"start at cursor {json.dumps(cursor)}" if cursor is not None else "start",
            )
        clock = time.monotonic()
        run_totals = Totals()
        expected = remaining_before
        while True:
            try:
                if self._fused:
                    cursor, finished = self._fused_batch(cursor, totals, run_totals)
                    if finished:
                        break
                else:
                    first, last, count = self._next_range(cursor)
                    if not count:
                        break
                    cursor = self._process(first, last, count, cursor, totals, run_totals)
            except _RowFailure as failure:
                with db.transaction():
                    self._save(
                        "failed", cursor, totals, reason=f"stop-on-error at key {failure.key}: {failure.message}"
                    )
                    state.record_event(db, self.ctx.run_id, "fail", self.step.id, failure.message)
                raise CheckFailedError(
                    f"backfill {self.step.id} stopped (--stop-on-error) at {self.key}={failure.key}: "
                    f"{failure.message}; fix the cause and rerun to resume"
                ) from None
            seen = totals.processed + totals.failed
            if totals.failed and seen >= self.min_sample and totals.failed / seen > self.error_rate:
                reason = (
                    f"error rate {totals.failed / seen:.2%} over {self.error_rate:.2%} after {seen} rows "
                    f"({totals.failed} quarantined)"
                )
                with db.transaction():
                    self._save("paused", cursor, totals, reason=reason)
                    state.record_event(db, self.ctx.run_id, "fail", self.step.id, f"paused: {reason}")
                raise CheckFailedError(
                    f"backfill {self.step.id} paused: {reason}; see kit_backfill_quarantine, then rerun to resume"
                )
            if self.ctx.on_rows is not None:
                self.ctx.on_rows(self.step.id, run_totals.processed + run_totals.failed, expected)
            self.ctx.lock.renew()
        try:
            post_results = self._job_checks("post_check", self.job.post_checks, book)
        except CheckFailedError as failed:
            # Not finished: the next run re-evaluates the post_checks (after an operator fix) before finishing.
            with db.transaction():
                self._save("paused", cursor, totals, reason=str(failed))
            raise
        with db.transaction():
            self._save("finished", cursor, totals)
            state.record_event(
                db,
                self.ctx.run_id,
                "backfill",
                self.step.id,
                f"finished: {totals.processed} rows, {totals.failed} quarantined",
            )
        elapsed = time.monotonic() - clock
        seen = totals.processed + totals.failed
        return dataclasses.replace(
            result,
            status="finished",
            reason=None,
            resumed_from=resumed_from,
            cursor=cursor,
            rows_processed=totals.processed,
            rows_failed=totals.failed,
            batches=totals.batches,
            rows_this_run=run_totals.processed,
            failed_this_run=run_totals.failed,
            error_rate=totals.failed / seen if seen else 0.0,
            duration_ms=int(elapsed * 1000),
            rows_per_second=round(run_totals.processed / elapsed, 1) if elapsed > 0 else None,
            remaining_after=self.remaining(),
            pre_checks=tuple(pre_results),
            post_checks=tuple(post_results),
        )

    def _process(self, first: Any, last: Any, count: int, cursor: Any, totals: Totals, run_totals: Totals) -> Any:
        """Apply the batch [first, last] of ``count`` rows (bisecting on failure); returns the new cursor."""
        db = self.ctx.db
        clock = time.monotonic()
        try:
            with db.transaction():
                changed = self._update_range(first, last)
                updated = Totals(totals.processed + changed, totals.failed, totals.batches + 1)
                db.execute_batch(self._progress_statements(cursor, last, updated, count, changed, 0, clock))
        except Exception as exc:
            self._raise_unless_row_failure(exc, cursor)
            if count == 1:
                return self._quarantine(first, dbmod.describe(exc), cursor, totals, run_totals)
            keys = self._keys_between(first, last)
            middle = len(keys) // 2
            cursor = self._process(keys[0], keys[middle - 1], middle, cursor, totals, run_totals)
            return self._process(keys[middle], keys[-1], len(keys) - middle, cursor, totals, run_totals)
        totals.processed, totals.batches = updated.processed, updated.batches
        run_totals.processed += changed
        run_totals.batches += 1
        return last

    def _quarantine(self, key: Any, message: str, cursor: Any, totals: Totals, run_totals: Totals) -> Any:
        if self.ctx.options.stop_on_error:
            raise _RowFailure(key, message)
        db = self.ctx.db
        with db.transaction():
            updated = Totals(totals.processed, totals.failed + 1, totals.batches)
            db.execute(
                "INSERT INTO kit_backfill_quarantine (job, row_key, error, run_id, at) "
                "VALUES (:job, :key, :error, :run, :at)",
                {
                    "job": self.state_key,
                    "key": json.dumps(key),
                    "error": message,
                    "run": self.ctx.run_id,
                    "at": state.utc_now(),
                },
            )
            db.execute_batch(self._progress_statements(cursor, key, updated, 1, 0, 1, time.monotonic()))
        totals.failed = updated.failed
        run_totals.failed += 1
        return key


def dry_run(ctx: RunContext, step: Step, *, pending_before: tuple[str, ...] = ()) -> DryBackfill:
    """Read-only: rows the job would change, per tenant, and how far the count can be trusted.

    ``pending_before``: steps of this kit that run before the job and are not applied yet.
    """
    job = BackfillJob(ctx, step)
    db = ctx.db
    present = db.table_exists(job.table)
    by_tenant: dict[str, int] = {}
    basis: Any = "exact"
    reason = "the predicate counted on the database as the job will find it"
    if pending_before:
        basis = "current"
        reason = (
            f"counted on the database as it is now; {len(pending_before)} earlier step(s) of this kit are pending "
            f"({', '.join(pending_before[:3])}{', …' if len(pending_before) > 3 else ''}) and may change it"
        )
    if not present:
        basis = "current"
        reason = f"{job.table} does not exist yet: 0 rows now; the steps of this kit before the job decide how many"
    else:
        try:
            by_tenant = job.remaining_by_tenant()
        except Exception as exc:
            if not dbmod.is_database_error(exc):
                raise
            # The predicate names a table or column an earlier step of this kit adds, so it cannot be
            # evaluated yet: every row (of the tenant) may need work, which bounds the count from above.
            tenant = f" WHERE {job.tenant_column} = :tenant" if ctx.options.tenant is not None else ""
            total = db.query_value(f"SELECT COUNT(*) FROM {job.table}{tenant}", job._params())
            by_tenant = {ctx.options.tenant or "*": int(total or 0)}
            basis = "upper-bound"
            reason = (
                f"the predicate cannot run before the kit's earlier steps ({dbmod.describe(exc)}); "
                f"counted every row of {job.table} instead"
            )
    recorded = None
    if db.table_exists("kit_backfill_runs"):
        recorded = db.query_value("SELECT status FROM kit_backfill_runs WHERE job = :job", {"job": job.state_key})
    return DryBackfill(
        id=step.id,
        phase=step.phase,
        checksum=step.checksum,
        table=job.table,
        table_present=present,
        predicate=job.predicate,
        would_update=sum(by_tenant.values()),
        by_tenant=by_tenant,
        batch_size=job.batch_size,
        count_basis=basis,
        count_reason=reason,
        status=str(recorded) if recorded not in (None, "reverted") else "pending",
        sql=job.statement_text(),
        tenant=ctx.options.tenant,
    )

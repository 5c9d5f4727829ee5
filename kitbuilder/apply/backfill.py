"""Batched, resumable backfills over key ranges (keyset pagination).

Each batch selects the next ``batch_size`` keys after the cursor whose rows
still match the job's predicate, updates exactly the range [first, last] of
those keys (still filtered by the predicate), and advances the cursor in the
same transaction. A killed or interrupted run therefore resumes at the last
committed cursor: no row is processed twice, none skipped.

Only a ``RowError`` (the database rejected one row's data) is handled here: the
failing batch is bisected down to single rows and a failing row is quarantined
with its error, unless --stop-on-error, or the error rate of this run passes
its threshold, which pauses the job. Every other database error (disk full, a
lost connection, a lock, an interrupt) propagates: the open batch rolls back
and the run stops, to resume exactly there.

The cursor is a hint, not the truth: the job is finished only when no row in
scope matches the predicate except the quarantined ones. Rows behind the
cursor (a cursor edited past the end, rows inserted behind it) are found by a
rescan from the start. Quarantined rows are retried first on every run, so a
row an operator fixed is applied and leaves the quarantine.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Any

from kitbuilder import faults
from kitbuilder.apply import checks as checkmod
from kitbuilder.apply import state
from kitbuilder.apply.checks import CheckResult
from kitbuilder.apply.context import RunContext
from kitbuilder.apply.db import (
    AccessError,
    BusyError,
    ConnectionLostError,
    RowError,
    StatementError,
    StorageFullError,
    SystemicError,
)
from kitbuilder.apply.plan import Step
from kitbuilder.apply.results import BackfillResult, DryBackfill
from kitbuilder.core.jobs import Check, named_parameters
from kitbuilder.errors import CheckFailedError, DatabaseError, UsageError

MAX_RESCANS = 2
# The first and last key of a batch and its size. By ORDER BY, not MIN/MAX: PostgreSQL has no min(uuid), and
# every key a backfill pages by is orderable.
_BOUNDS = (
    "(SELECT kit_k FROM kit_batch ORDER BY kit_k LIMIT 1) AS lo, "
    "(SELECT kit_k FROM kit_batch ORDER BY kit_k DESC LIMIT 1) AS hi, (SELECT COUNT(*) FROM kit_batch) AS n"
)


@dataclass
class Totals:
    processed: int = 0
    failed: int = 0
    batches: int = 0

    def frozen(self) -> state.JobTotals:
        return state.JobTotals(self.processed, self.failed, self.batches)


class _RowFailure(Exception):
    def __init__(self, key: Any, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


_SYSTEMIC_HINTS: tuple[tuple[type[SystemicError], str], ...] = (
    (StorageFullError, "free space where the database keeps its files"),
    (ConnectionLostError, "check the database server"),
    (BusyError, "another connection holds a lock the batch needs"),
    (AccessError, "check the database's permissions"),
)


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
        # A job limited to one tenant keeps its own cursor, status and quarantine (`ID[tenant=T]`), so a later
        # full apply (or another tenant) still processes every other row.
        self.state_key = state.job_key(step.id, options.tenant)

        # What run() tracks; in memory only what a committed transaction already recorded.
        self._cursor: Any = None
        self._started = ""
        self._remaining_before = 0
        self.totals = Totals()
        self.run_totals = Totals()  # this run's new rows: the error-rate window
        self._known_quarantine: set[str] = set()
        self._failing: set[str] = set()  # quarantined keys in scope that still fail in this run

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
            f"WITH kit_batch AS (SELECT {self.key} AS kit_k FROM {self.table} "
            f"WHERE ({self.predicate}){after}{self._tenant_filter()} ORDER BY {self.key} "
            f"LIMIT {int(self.batch_size)}) SELECT {_BOUNDS}"
        )
        params = self._params(cursor=cursor) if cursor is not None else self._params()
        first, last, count = self.ctx.db.query(sql, params)[0]
        return self._key(first), self._key(last), int(count)

    def _key(self, value: Any) -> Any:
        return state.key_value(self.step.id, f"{self.table}.{self.key}", value)

    def _keys_between(self, first: Any, last: Any) -> list[Any]:
        sql = (
            f"SELECT {self.key} FROM {self.table} WHERE {self.key} >= :lo AND {self.key} <= :hi "
            f"AND ({self.predicate}){self._tenant_filter()} ORDER BY {self.key}"
        )
        return [self._key(row[0]) for row in self.ctx.db.query(sql, self._params(lo=first, hi=last))]

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

    def _key_matches(self, key: Any, *, in_scope: bool) -> bool:
        tenant = self._tenant_filter() if in_scope else ""
        sql = f"SELECT COUNT(*) FROM {self.table} WHERE {self.key} = :k AND ({self.predicate}){tenant}"
        params = self._params(k=key) if in_scope else {"k": key}
        return bool(self.ctx.db.query_value(sql, params))

    # State -----------------------------------------------------------------------------------------------------

    def load_state(self) -> state.JobRecord | None:
        """The job's recorded state; None when never started or reverted. DatabaseError on drift or a bad cursor."""
        record = self.ctx.state.job(self.state_key)
        if record is None or record.status == "reverted":
            return None
        if record.checksum != self.step.checksum:
            raise DatabaseError(
                f"backfill {self.step.id}: job definition changed since it started (checksum {record.checksum[:16]}…, "
                f"kit has {self.step.checksum[:16]}…); run `kit repair KIT --db URL --accept-checksum {self.step.id}`"
            )
        if record.cursor is not None:
            try:
                self.ctx.db.query(
                    f"SELECT 1 FROM {self.table} WHERE {self.key} > :cursor LIMIT 1", {"cursor": record.cursor}
                )
            except (RowError, StatementError) as exc:
                raise DatabaseError(
                    f"kit_backfill_runs: cursor {json.dumps(record.cursor)} of backfill {self.step.id} does not fit "
                    f"{self.table}.{self.key} ({exc.reason}); reset it with `kit repair KIT --db URL --reset-cursor "
                    f'{self.step.id} --reason "…"`'
                ) from exc
        return record

    def _save(self, status: str, cursor: Any, reason: str | None = None) -> None:
        self.ctx.state.save_job(
            job=self.state_key,
            kit_sha256=self.ctx.kit_sha256,
            checksum=self.step.checksum,
            status=status,
            cursor=cursor,
            batch_size=self.batch_size,
            totals=self.totals.frozen(),
            started_at=self._started,
            remaining=self._remaining_estimate(),
            reason=reason,
        )

    def _remaining_estimate(self) -> int:
        return max(0, self._remaining_before - self.run_totals.processed)

    def _batch_statements(
        self, cursor_from: Any, cursor_to: Any, updated: Totals, size: int, processed: int, failed: int, clock: float
    ) -> list[state.Statement]:
        return self.ctx.state.batch_statements(
            job=self.state_key,
            run_id=self.ctx.run_id,
            cursor_from=cursor_from,
            cursor_to=cursor_to,
            totals=updated.frozen(),
            remaining=max(0, self._remaining_before - self.run_totals.processed - processed),
            size=size,
            processed=processed,
            failed=failed,
            duration_ms=int((time.monotonic() - clock) * 1000),
        )

    def _committed(self, updated: Totals, changed: int, failed: int) -> None:
        """Account a committed batch in memory (only after its transaction committed)."""
        self.run_totals.processed += changed
        self.run_totals.failed += failed
        self.run_totals.batches += 1
        self.totals.processed, self.totals.failed, self.totals.batches = (
            updated.processed,
            updated.failed,
            updated.batches,
        )
        faults.point("backfill-committed")

    # Batches ---------------------------------------------------------------------------------------------------

    def _fused_batch(self, cursor: Any) -> tuple[Any, bool]:
        """Find and apply the next batch in one statement; returns (new cursor, pass finished)."""
        db = self.ctx.db
        clock = time.monotonic()
        after = f" AND {self.key} > :cursor" if cursor is not None else ""
        assignments = ", ".join(f"{column} = {expression}" for column, expression in self.job.set)
        sql = (
            f"WITH kit_batch AS (SELECT {self.key} AS kit_k FROM {self.table} WHERE ({self.predicate}){after}"
            f"{self._tenant_filter()} ORDER BY {self.key} LIMIT {int(self.batch_size)}), "
            f"kit_bounds AS (SELECT {_BOUNDS}), "
            f"kit_updated AS (UPDATE {self.table} SET {assignments} WHERE {self.key} >= (SELECT lo FROM kit_bounds) "
            f"AND {self.key} <= (SELECT hi FROM kit_bounds) AND ({self.predicate}){self._tenant_filter()} RETURNING 1) "
            "SELECT lo, hi, n, (SELECT COUNT(*) FROM kit_updated) FROM kit_bounds"
        )
        params = self._params(cursor=cursor) if cursor is not None else self._params()
        try:
            with db.transaction():
                _, last, count, changed = db.query(sql, params)[0]
                last = self._key(last)
                if not count:
                    return cursor, True
                updated = Totals(self.totals.processed + changed, self.totals.failed, self.totals.batches + 1)
                faults.point("backfill-batch")
                db.execute_batch(self._batch_statements(cursor, last, updated, count, changed, 0, clock))
        except RowError:
            # Some row in the batch fails: find the batch again and bisect it the portable way.
            first, last, count = self._next_range(cursor)
            return self._process(first, last, count, cursor), False
        self._committed(updated, changed, 0)
        return last, False

    def _process(self, first: Any, last: Any, count: int, cursor: Any) -> Any:
        """Apply the batch [first, last] of ``count`` rows (bisecting on a row error); returns the new cursor."""
        db = self.ctx.db
        clock = time.monotonic()
        try:
            with db.transaction():
                changed = self._update_range(first, last)
                updated = Totals(self.totals.processed + changed, self.totals.failed, self.totals.batches + 1)
                faults.point("backfill-batch")
                db.execute_batch(self._batch_statements(cursor, last, updated, count, changed, 0, clock))
        except RowError as exc:
            if count == 1:
                return self._quarantine(first, exc.reason, cursor)
            keys = self._keys_between(first, last)
            middle = len(keys) // 2
            cursor = self._process(keys[0], keys[middle - 1], middle, cursor)
            return self._process(keys[middle], keys[-1], len(keys) - middle, cursor)
        self._committed(updated, changed, 0)
        return last

    def _quarantine(self, key: Any, message: str, cursor: Any) -> Any:
        if self.ctx.options.stop_on_error:
            raise _RowFailure(key, message)
        encoded = state.encode_key(key)
        known = encoded in self._known_quarantine
        updated = Totals(self.totals.processed, self.totals.failed + (0 if known else 1), self.totals.batches)
        with self.ctx.db.transaction():
            self.ctx.state.quarantine(job=self.state_key, key=key, error=message, run_id=self.ctx.run_id)
            self.ctx.db.execute_batch(self._batch_statements(cursor, key, updated, 1, 0, 1, time.monotonic()))
        self._known_quarantine.add(encoded)
        self._failing.add(encoded)
        self._committed(updated, 0, 0 if known else 1)
        return key

    def _retry_quarantined(self) -> None:
        """Retry rows quarantined by earlier runs: a row fixed since (or no longer in need) leaves the quarantine."""
        for key in self.ctx.state.quarantined_keys(self.state_key):
            encoded = state.encode_key(key)
            self._known_quarantine.add(encoded)
            if not self._key_matches(key, in_scope=False):
                # Fixed by hand or deleted: nothing left to do for it.
                self._release(key, 0, "no longer matches the predicate")
                continue
            if not self._key_matches(key, in_scope=True):
                continue  # another tenant's row: not this run's business
            try:
                with self.ctx.db.transaction():
                    changed = self._update_range(key, key)
                    self.ctx.state.release_quarantine(job=self.state_key, key=key)
                    updated = Totals(self.totals.processed + changed, self.totals.failed - 1, self.totals.batches)
                    self.ctx.state.update_job_totals(self.state_key, updated.frozen(), self._remaining_estimate())
                    self.ctx.state.record_event(self.ctx.run_id, "backfill", self.step.id, f"retried {encoded}: ok")
            except RowError as exc:
                with self.ctx.db.transaction():
                    self.ctx.state.quarantine(job=self.state_key, key=key, error=exc.reason, run_id=self.ctx.run_id)
                self._failing.add(encoded)
                continue
            self._known_quarantine.discard(encoded)
            self.totals.processed, self.totals.failed = updated.processed, updated.failed
            self.run_totals.processed += changed

    def _release(self, key: Any, changed: int, why: str) -> None:
        updated = Totals(self.totals.processed + changed, self.totals.failed - 1, self.totals.batches)
        with self.ctx.db.transaction():
            self.ctx.state.release_quarantine(job=self.state_key, key=key)
            self.ctx.state.update_job_totals(self.state_key, updated.frozen(), self._remaining_estimate())
            self.ctx.state.record_event(
                self.ctx.run_id, "backfill", self.step.id, f"quarantined {state.encode_key(key)} released: {why}"
            )
        self._known_quarantine.discard(state.encode_key(key))
        self.totals.processed, self.totals.failed = updated.processed, updated.failed

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
                self.ctx.state.record_event(
                    self.ctx.run_id,
                    "check",
                    self.step.id,
                    f"{which} {result.id}: {outcome}; observed {result.observed}, expected {result.expected}",
                )
            if not result.passed and result.on_fail == "halt":
                raise CheckFailedError(checkmod.failure_message(result, f"backfill {self.step.id}: {which} "))
        return results

    def run(self) -> BackfillResult:
        try:
            return self._run()
        except SystemicError as exc:
            hint = next((text for cls, text in _SYSTEMIC_HINTS if isinstance(exc, cls)), "see the database's log")
            where = f"{self.key}={json.dumps(self._cursor)}" if self._cursor is not None else "its start"
            raise type(exc)(
                f"backfill {self.step.id} stopped at {where}: {exc.reason}; the open batch was rolled back, nothing "
                f"was quarantined; {hint}, then rerun kit apply to resume",
                reason=exc.reason,
                sqlstate=exc.sqlstate,
            ) from exc

    def _run(self) -> BackfillResult:
        db = self.ctx.db
        record = self.load_state()
        self.totals = (
            Totals(record.rows_processed, record.rows_failed, record.batches) if record is not None else Totals()
        )
        cursor = record.cursor if record is not None else None
        self._cursor = cursor
        self._started = record.started_at if record is not None else state.utc_now()
        self._remaining_before = self.remaining()
        result = BackfillResult(
            id=self.step.id,
            phase=self.step.phase,
            checksum=self.step.checksum,
            table=self.table,
            batch_size=self.batch_size,
            remaining_before=self._remaining_before,
            status="skipped",
            remaining_after=0,
            rows_processed=self.totals.processed,
            rows_failed=self.totals.failed,
            reason="already finished",
            metric=self.job.metric,
            tenant=self.ctx.options.tenant,
        )
        if record is not None and record.status == "finished" and self._remaining_before == 0:
            return result
        # pre_checks guard the first batch of this run; their "before" counts serve the post_checks.
        book = checkmod.CheckBook(changed=True)
        checkmod.measure_before(db, self.job.pre_checks + self.job.post_checks, book)
        pre_results = self._job_checks("pre_check", self.job.pre_checks, book)
        resumed_from = cursor
        with db.transaction():
            self._save("active", cursor)
            self.ctx.state.record_event(
                self.ctx.run_id,
                "backfill",
                self.step.id,
                f"start at cursor {json.dumps(cursor)}" if cursor is not None else "start",
            )
        clock = time.monotonic()
        self._retry_quarantined()
        rescans = 0
        while True:
            cursor = self._forward_pass(cursor)
            # The cursor is a hint: finished means nothing in scope still matches except quarantined rows.
            behind = self.remaining() - len(self._failing)
            if behind <= 0:
                break
            if rescans == MAX_RESCANS:
                with db.transaction():
                    self._save("active", cursor, reason=f"{behind} rows keep appearing behind the cursor")
                raise CheckFailedError(
                    f"backfill {self.step.id}: {behind} rows matching the predicate keep appearing behind the cursor "
                    f"after {MAX_RESCANS} rescans; stop writes to {self.table} (the runbook's freeze) and rerun"
                )
            rescans += 1
            with db.transaction():
                self.ctx.state.record_event(
                    self.ctx.run_id,
                    "backfill",
                    self.step.id,
                    f"{behind} rows behind cursor {json.dumps(cursor)} still match: rescanning from the start",
                )
            cursor = None
            self._cursor = None
        try:
            # A tenant run leaves the other tenants' rows: its post_checks are deferred to a full apply (Plan).
            post_checks = self.job.post_checks if self.ctx.options.tenant is None else ()
            post_results = self._job_checks("post_check", post_checks, book)
        except CheckFailedError as failed:
            # Not finished: the next run re-evaluates the post_checks (after an operator fix) before finishing.
            with db.transaction():
                self._save("paused", cursor, reason=str(failed))
            raise
        with db.transaction():
            self._save("finished", cursor)
            if self.ctx.options.tenant is None and self.ctx.state.finish_tenant_states(self.step.id):
                self.ctx.state.record_event(
                    self.ctx.run_id, "backfill", self.step.id, "the open per-tenant runs are finished with the job"
                )
            self.ctx.state.record_event(
                self.ctx.run_id,
                "backfill",
                self.step.id,
                f"finished: {self.totals.processed} rows, {self.totals.failed} quarantined",
            )
        elapsed = time.monotonic() - clock
        seen = self.totals.processed + self.totals.failed
        return dataclasses.replace(
            result,
            status="finished",
            reason=None,
            resumed_from=resumed_from,
            cursor=cursor,
            rows_processed=self.totals.processed,
            rows_failed=self.totals.failed,
            batches=self.totals.batches,
            rows_this_run=self.run_totals.processed,
            failed_this_run=self.run_totals.failed,
            error_rate=self.totals.failed / seen if seen else 0.0,
            duration_ms=int(elapsed * 1000),
            rows_per_second=round(self.run_totals.processed / elapsed, 1) if elapsed > 0 else None,
            remaining_after=self.remaining(),
            pre_checks=tuple(pre_results),
            post_checks=tuple(post_results),
        )

    def _forward_pass(self, cursor: Any) -> Any:
        """Batches from ``cursor`` until no row after it matches; returns the last cursor."""
        db = self.ctx.db
        expected = self._remaining_before
        while True:
            try:
                if self._fused:
                    cursor, finished = self._fused_batch(cursor)
                    if finished:
                        return cursor
                else:
                    first, last, count = self._next_range(cursor)
                    if not count:
                        return cursor
                    cursor = self._process(first, last, count, cursor)
            except _RowFailure as failure:
                with db.transaction():
                    self._save("failed", self._cursor, reason=f"stop-on-error at key {failure.key}: {failure.message}")
                    self.ctx.state.record_event(self.ctx.run_id, "fail", self.step.id, failure.message)
                raise CheckFailedError(
                    f"backfill {self.step.id} stopped (--stop-on-error) at {self.key}={failure.key}: "
                    f"{failure.message}; fix the cause and rerun to resume"
                ) from None
            self._cursor = cursor
            self._pause_if_error_rate_exceeded(cursor)
            if self.ctx.on_rows is not None:
                self.ctx.on_rows(self.step.id, self.run_totals.processed + self.run_totals.failed, expected)
            self.ctx.lock.renew()

    def _pause_if_error_rate_exceeded(self, cursor: Any) -> None:
        """Pause when this run's new failures pass the threshold (after min_sample rows of this run).

        The window is this run's rows only: rerunning after a fix (or with a higher --error-rate) is not
        paused again by the failures that paused the previous run.
        """
        failed, seen = self.run_totals.failed, self.run_totals.processed + self.run_totals.failed
        if not failed or seen < self.min_sample or failed / seen <= self.error_rate:
            return
        reason = f"error rate {failed / seen:.2%} over {self.error_rate:.2%} after {seen} rows ({failed} quarantined)"
        with self.ctx.db.transaction():
            self._save("paused", cursor, reason=reason)
            self.ctx.state.record_event(self.ctx.run_id, "fail", self.step.id, f"paused: {reason}")
        raise CheckFailedError(
            f"backfill {self.step.id} paused: {reason}; fix the rows listed in kit_backfill_quarantine and rerun "
            f"(quarantined rows are retried first and the rate is measured afresh), or rerun with a higher "
            f"--error-rate (now {self.error_rate:g})"
        )


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
        except (RowError, StatementError) as exc:
            # The predicate names a table or column an earlier step of this kit adds, so it cannot be
            # evaluated yet: every row (of the tenant) may need work, which bounds the count from above.
            tenant = f" WHERE {job.tenant_column} = :tenant" if ctx.options.tenant is not None else ""
            total = db.query_value(f"SELECT COUNT(*) FROM {job.table}{tenant}", job._params())
            by_tenant = {ctx.options.tenant or "*": int(total or 0)}
            basis = "upper-bound"
            reason = (
                f"the predicate cannot run before the kit's earlier steps ({exc.reason}); "
                f"counted every row of {job.table} instead"
            )
    recorded = None
    if db.table_exists("kit_backfill_runs"):
        record = ctx.state.job(job.state_key)
        recorded = record.status if record is not None else None
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

"""One backfill job of a run: its state, checks, key ranges, workers, rescans and outcome.

With ``--workers N`` (PostgreSQL) a job that has not started is cut into N
key ranges of about equal rows by one ordered query, and the ranges are
recorded in kit state with the job's start, before the first batch: a rerun
after a kill resumes the SAME ranges, each from its own cursor, whatever
``--workers`` it is given. A job that already has a cursor of an unsplit run
stays unsplit. Workers are described in ``worker.py``; this module owns
everything around them: what is recorded when the job starts, pauses, fails
or finishes is written here, once no worker runs.

The cursors are hints, not the truth: the job is finished only when no row in
scope matches the predicate except the quarantined ones. Rows behind a cursor
(a cursor edited past the end, rows inserted behind it) are found by a rescan
of every range from its start. Quarantined rows are retried first on every
run, so a row an operator fixed is applied and leaves the quarantine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from typing import Any

from kitbuilder import faults
from kitbuilder.apply import checks as checkmod
from kitbuilder.apply import state
from kitbuilder.apply.backfill.pool import run_parallel, worker_connections
from kitbuilder.apply.backfill.ranges import last_cursor, plan_bounds, progress, row_cursor
from kitbuilder.apply.backfill.sql import JobSql
from kitbuilder.apply.backfill.worker import (
    KeyRange,
    Located,
    PauseRequested,
    RangeWorker,
    RowFailure,
    Shared,
    Totals,
)
from kitbuilder.apply.checks import CheckResult
from kitbuilder.apply.context import RunContext
from kitbuilder.apply.db import (
    AccessError,
    BusyError,
    ConnectionLostError,
    Database,
    RowError,
    StatementError,
    StorageFullError,
    SystemicError,
)
from kitbuilder.apply.plan import Step
from kitbuilder.apply.results import BackfillResult
from kitbuilder.core.jobs import Check
from kitbuilder.errors import CheckFailedError, DatabaseError, UsageError

MAX_RESCANS = 2

_SYSTEMIC_HINTS: tuple[tuple[type[SystemicError], str], ...] = (
    (StorageFullError, "free space where the database keeps its files"),
    (ConnectionLostError, "check the database server"),
    (BusyError, "another connection holds a lock the batch needs: end that transaction or raise --lock-timeout"),
    (AccessError, "check the database's permissions"),
)


def check_workers(workers: int, dialect: str) -> None:
    """--workers fits the database: SQLite takes one writer at a time, so more than one is refused (exit 2)."""
    if workers > 1 and dialect != "postgresql":
        raise UsageError(
            f"--workers {workers}: SQLite lets one connection write at a time, so parallel backfill workers would "
            "only wait for each other; run with --workers 1 (the default)"
        )


class BackfillJob:
    def __init__(self, ctx: RunContext, step: Step) -> None:
        self.ctx = ctx
        self.step = step
        job = self.job = step.backfill
        options = ctx.options
        self.sql = JobSql(job, options.tenant)
        self.table: str = job.table
        self.key: str = job.key
        self.batch_size = options.batch_size or job.batch_size
        self.workers = options.workers
        if options.tenant is not None and job.tenant_problem is not None:
            # validate_plan refuses this before the run's first statement; kept as the last line of defence.
            raise UsageError(f"--tenant given, but backfill {step.id} {job.tenant_problem}")
        # A job limited to one tenant keeps its own cursor, status and quarantine (`ID[tenant=T]`), so a later
        # full apply (or another tenant) still processes every other row.
        self.state_key = state.job_key(step.id, options.tenant)
        threshold = options.error_rate_threshold
        self.shared = Shared(
            ctx=ctx,
            step_id=step.id,
            state_key=self.state_key,
            sql=self.sql,
            batch_size=self.batch_size,
            # On PostgreSQL a `set:` job finds and updates each batch in one statement (one round trip).
            fused=ctx.db.dialect == "postgresql" and bool(job.set),
            error_rate=threshold if threshold is not None else job.error_rate_threshold,
            min_sample=options.min_sample or job.min_sample,
            expected=0,
            ranges=0,
        )
        self._started = ""
        self._cursor: Any = None  # the unsplit job's cursor, for messages
        self._workers: dict[int | None, RangeWorker] = {}  # this pass's, by range number (None: unsplit)
        self._run_rows: dict[int | None, int] = {}  # rows of earlier passes of this run, by range number
        self._recorded_ranges: list[state.RangeRecord] = []
        self._remaining = 0  # rows in scope when the last pass ended

    # Reading -----------------------------------------------------------------------------------------------------

    def statement_text(self) -> str:
        return self.sql.statement_text()

    def remaining(self) -> int:
        sql, params = self.sql.remaining()
        return int(self.ctx.db.query_value(sql, params) or 0)

    def remaining_by_tenant(self) -> dict[str, int]:
        if not self.job.tenant_column:
            return {"*": self.remaining()}
        sql, params = self.sql.remaining_by_tenant()
        return {str(tenant): int(count) for tenant, count in self.ctx.db.query(sql, params)}

    def _key(self, value: Any) -> Any:
        return state.key_value(self.step.id, f"{self.table}.{self.key}", value)

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
        recorded = [("kit_backfill_runs: cursor", record.cursor)]
        for key_range in self.ctx.state.ranges(self.state_key):
            where = f"kit_backfill_ranges: range {key_range.range_no}"
            recorded += [(f"{where} lo", key_range.lo), (f"{where} hi", key_range.hi)]
            recorded.append((f"{where} cursor", key_range.cursor))
        for what, value in recorded:
            if value is not None:
                self._check_key_fits(what, value)
        return record

    def _check_key_fits(self, what: str, value: Any) -> None:
        try:
            self.ctx.db.query(*self.sql.key_fits(value))
        except (RowError, StatementError) as exc:
            raise DatabaseError(
                f"{what} {json.dumps(value)} of backfill {self.step.id} does not fit {self.table}.{self.key} "
                f'({exc.reason}); reset it with `kit repair KIT --db URL --reset-cursor {self.step.id} --reason "…"`'
            ) from exc

    # Recording (only while no worker runs) -----------------------------------------------------------------------

    def _save(self, status: str, ranges: list[KeyRange], reason: str | None = None) -> None:
        self.ctx.state.save_job(
            job=self.state_key,
            kit_sha256=self.ctx.kit_sha256,
            checksum=self.step.checksum,
            status=status,
            cursor=row_cursor(ranges),
            batch_size=self.batch_size,
            totals=self.shared.totals.frozen(),
            started_at=self._started,
            remaining=self.shared.remaining_estimate(),
            reason=reason,
        )

    def _event(self, detail: str) -> None:
        self.ctx.state.record_event(self.ctx.run_id, "backfill", self.step.id, detail)

    def _sync_totals(self) -> None:
        """The job's totals as committed: after parallel workers the database's row is the truth."""
        record = self.ctx.state.job(self.state_key)
        if record is not None:
            self.shared.totals = Totals(record.rows_processed, record.rows_failed, record.batches)

    # Key ranges --------------------------------------------------------------------------------------------------

    def _start(self, record: state.JobRecord | None) -> list[KeyRange]:
        """Record the job active (with its new ranges, if it is split now); returns the ranges to work on."""
        store = self.ctx.state
        recorded = store.ranges(self.state_key)
        cursor = record.cursor if record is not None else None
        stale = record is None and bool(recorded)  # ranges of a job whose row was removed by hand
        pieces = min(self.workers, -(-self.shared.expected // self.batch_size))  # no range under one batch
        split = (stale or not recorded) and cursor is None and pieces > 1 and self.ctx.db.dialect == "postgresql"
        bounds = plan_bounds(self.ctx.db, self.sql, pieces, self._key) if split else []
        if recorded and not stale:
            ranges = [KeyRange(r.range_no, r.lo, r.hi, r.cursor) for r in recorded]
        elif bounds:
            ranges = [KeyRange(number, lo, hi, None) for number, (lo, hi) in enumerate(bounds)]
        else:
            ranges = [KeyRange(None, None, None, cursor)]
        with self.ctx.db.transaction():
            if stale:
                store.drop_ranges(self.state_key)
            self._save("active", ranges)
            if bounds:
                store.record_ranges(self.state_key, bounds)
            if ranges[0].number is not None:
                done = sum(r.cursor is not None for r in ranges)
                self._event(f"start in {len(ranges)} key ranges ({done} resumed), {self.workers} worker(s)")
            else:
                self._event(f"start at cursor {json.dumps(cursor)}" if cursor is not None else "start")
        self.shared.ranges = len(ranges) if ranges[0].number is not None else 0
        return ranges

    # Quarantine --------------------------------------------------------------------------------------------------

    def _retry_quarantined(self) -> None:
        """Retry rows quarantined by earlier runs: a row fixed since (or no longer in need) leaves the quarantine."""
        db, store, shared = self.ctx.db, self.ctx.state, self.shared
        for key in store.quarantined_keys(self.state_key):
            encoded = state.encode_key(key)
            shared.known_quarantine.add(encoded)
            if not db.query_value(*self.sql.key_matches(key, in_scope=False)):
                # Fixed by hand or deleted: nothing left to do for it.
                self._release(key, "no longer matches the predicate")
                continue
            if not db.query_value(*self.sql.key_matches(key, in_scope=True)):
                continue  # another tenant's row: not this run's business
            try:
                with db.transaction():
                    changed = db.execute(*self.sql.update_range(key, key))
                    store.release_quarantine(job=self.state_key, key=key)
                    totals = shared.totals
                    updated = Totals(totals.processed + changed, totals.failed - 1, totals.batches)
                    store.update_job_totals(self.state_key, updated.frozen(), shared.remaining_estimate())
                    self._event(f"retried {encoded}: ok")
            except RowError as exc:
                with db.transaction():
                    store.quarantine(job=self.state_key, key=key, error=exc.reason, run_id=self.ctx.run_id)
                shared.failing.add(encoded)
                continue
            shared.known_quarantine.discard(encoded)
            shared.totals = updated
            shared.run_totals.processed += changed

    def _release(self, key: Any, why: str) -> None:
        shared = self.shared
        updated = Totals(shared.totals.processed, shared.totals.failed - 1, shared.totals.batches)
        with self.ctx.db.transaction():
            self.ctx.state.release_quarantine(job=self.state_key, key=key)
            self.ctx.state.update_job_totals(self.state_key, updated.frozen(), shared.remaining_estimate())
            self._event(f"quarantined {state.encode_key(key)} released: {why}")
        shared.known_quarantine.discard(state.encode_key(key))
        shared.totals = updated

    # Running -----------------------------------------------------------------------------------------------------

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
        except Located as located:
            raise self._stopped(located.error, located.where) from located.error
        except SystemicError as exc:
            where = f"{self.key}={json.dumps(self._cursor)}" if self._cursor is not None else "its start"
            raise self._stopped(exc, where) from exc

    def _stopped(self, exc: SystemicError, where: str) -> SystemicError:
        hint = next((text for cls, text in _SYSTEMIC_HINTS if isinstance(exc, cls)), "see the database's log")
        return type(exc)(
            f"backfill {self.step.id} stopped at {where}: {exc.reason}; the open batch was rolled back, nothing "
            f"was quarantined; {hint}, then rerun kit apply to resume",
            reason=exc.reason,
            sqlstate=exc.sqlstate,
        )

    def _run(self) -> BackfillResult:
        record = self.load_state()
        shared = self.shared
        if record is not None:
            shared.totals = Totals(record.rows_processed, record.rows_failed, record.batches)
        self._cursor = record.cursor if record is not None else None
        self._started = record.started_at if record is not None else state.utc_now()
        shared.expected = self.remaining()
        result = BackfillResult(
            id=self.step.id,
            phase=self.step.phase,
            checksum=self.step.checksum,
            table=self.table,
            batch_size=self.batch_size,
            remaining_before=shared.expected,
            status="skipped",
            remaining_after=0,
            rows_processed=shared.totals.processed,
            rows_failed=shared.totals.failed,
            reason="already finished",
            metric=self.job.metric,
            tenant=self.ctx.options.tenant,
        )
        if record is not None and record.status == "finished" and shared.expected == 0:
            return result
        # pre_checks guard the first batch of this run; their "before" counts serve the post_checks.
        book = checkmod.CheckBook(changed=True)
        checkmod.measure_before(self.ctx.db, self.job.pre_checks + self.job.post_checks, book)
        pre_results = self._job_checks("pre_check", self.job.pre_checks, book)
        clock = time.monotonic()  # the job's time includes cutting and recording its ranges
        self._refuse_null_keys()
        ranges = self._start(record)
        faults.point("backfill-ranges-recorded")
        started = ranges
        self._retry_quarantined()
        ranges = self._passes(ranges)
        post_results = self._finish(ranges, book)
        elapsed = time.monotonic() - clock
        run_totals, totals = shared.run_totals, shared.totals
        seen = totals.processed + totals.failed
        return dataclasses.replace(
            result,
            status="finished",
            reason=None,
            resumed_from=row_cursor(started),
            cursor=last_cursor(ranges),
            rows_processed=totals.processed,
            rows_failed=totals.failed,
            batches=totals.batches,
            rows_this_run=run_totals.processed,
            failed_this_run=run_totals.failed,
            error_rate=totals.failed / seen if seen else 0.0,
            duration_ms=int(elapsed * 1000),
            rows_per_second=round(run_totals.processed / elapsed, 1) if elapsed > 0 else None,
            remaining_after=self._remaining,  # counted when the last pass ended; checks change no rows
            pre_checks=tuple(pre_results),
            post_checks=tuple(post_results),
            workers=self.workers,
            ranges=progress(
                started,
                ranges,
                recorded=self._recorded_ranges,
                totals=self.shared.totals,
                rows={
                    n: self._run_rows.get(n, 0) + (w.rows_this_run if w else 0) for n, w in self._each_worker(ranges)
                },
            ),
        )

    def _passes(self, ranges: list[KeyRange]) -> list[KeyRange]:
        """Forward passes over every range until nothing in scope is left behind the cursors."""
        rescans = 0
        while True:
            ranges = self._forward_pass(ranges)
            # The cursors are hints: finished means nothing in scope still matches except quarantined rows.
            self._remaining = self.remaining()
            behind = self._remaining - len(self.shared.failing)
            if behind <= 0:
                return ranges
            self._refuse_null_keys(ranges)
            if rescans == MAX_RESCANS:
                with self.ctx.db.transaction():
                    self._save("active", ranges, reason=f"{behind} rows keep appearing behind the cursor")
                raise CheckFailedError(
                    f"backfill {self.step.id}: {behind} rows matching the predicate keep appearing behind the cursor "
                    f"after {MAX_RESCANS} rescans; stop writes to {self.table} (the runbook's freeze) and rerun"
                )
            rescans += 1
            with self.ctx.db.transaction():
                self._event(
                    f"{behind} rows behind cursor {json.dumps(last_cursor(ranges))} still match: "
                    "rescanning from the start"
                )
            ranges = [dataclasses.replace(r, cursor=None) for r in ranges]
            self._cursor = None

    def _refuse_null_keys(self, ranges: list[KeyRange] | None = None) -> None:
        """Rows in scope with a NULL key stop the job (exit 10): no range or cursor reaches them. Checked before
        the first batch, and when rows are left after a pass (recorded paused), not taken for rows behind a cursor."""
        nulls = int(self.ctx.db.query_value(*self.sql.null_keys()) or 0)
        if not nulls:
            return
        reason = f"{nulls} rows of {self.table} matching the predicate have {self.key} NULL"
        if ranges is not None:
            with self.ctx.db.transaction():
                self._save("paused", ranges, reason=reason)
        raise CheckFailedError(
            f"backfill {self.step.id}: {reason}; a backfill pages by its key (unique, not null), so it cannot reach "
            f"them: give them a key, or leave them out with AND {self.key} IS NOT NULL in the predicate, then rerun"
        )

    def _forward_pass(self, ranges: list[KeyRange]) -> list[KeyRange]:
        """Every range from its cursor to its end; returns the ranges with their new cursors."""
        for number, worker in self._workers.items():
            self._run_rows[number] = self._run_rows.get(number, 0) + worker.rows_this_run
        self._workers = {}
        try:
            if ranges[0].number is None:
                worker = self._workers[None] = RangeWorker(self.shared, self.ctx.db, ranges[0])
                try:
                    worker.run()
                finally:
                    self._cursor = worker.cursor
            else:
                self._run_split(ranges)
        except RowFailure as failure:
            self._stop_recorded(
                "failed",
                ranges,
                f"stop-on-error at key {failure.key}: {failure.message}",
                failure.message,
                f"backfill {self.step.id} stopped (--stop-on-error) at {self.key}={failure.key}: "
                f"{failure.message}; fix the cause and rerun to resume",
            )
        except PauseRequested as pause:
            self._stop_recorded(
                "paused",
                ranges,
                pause.reason,
                f"paused: {pause.reason}",
                f"backfill {self.step.id} paused: {pause.reason}; fix the rows listed in kit_backfill_quarantine and "
                "rerun (quarantined rows are retried first and the rate is measured afresh), or rerun with a higher "
                f"--error-rate (now {self.shared.error_rate:g})",
            )
        return self._moved(ranges)

    def _each_worker(self, ranges: list[KeyRange]) -> list[tuple[int | None, RangeWorker | None]]:
        return [(r.number, self._workers.get(r.number)) for r in ranges]

    def _moved(self, ranges: list[KeyRange]) -> list[KeyRange]:
        moved = []
        for key_range in ranges:
            worker = self._workers.get(key_range.number)
            moved.append(dataclasses.replace(key_range, cursor=worker.cursor) if worker else key_range)
        return moved

    def _stop_recorded(self, status: str, ranges: list[KeyRange], reason: str, event: str, message: str) -> None:
        """Record the job stopped (paused or failed) once every worker has, and raise exit 10."""
        with self.ctx.db.transaction():
            self._save(status, self._moved(ranges), reason=reason)
            self.ctx.state.record_event(self.ctx.run_id, "fail", self.step.id, event)
        raise CheckFailedError(message) from None

    def _run_split(self, ranges: list[KeyRange]) -> None:
        """The ranges on up to --workers connections of their own, in parallel."""
        shared = self.shared
        shared.stop.clear()

        def work(db: Database, key_range: KeyRange) -> None:
            worker = self._workers[key_range.number] = RangeWorker(shared, db, key_range)
            worker.run()

        try:
            with contextlib.ExitStack() as stack:
                count = min(self.workers, len(ranges))
                connections = worker_connections(self.ctx.db, count, stack, job=self.step.id, workers=self.workers)
                run_parallel(connections, ranges, work, shared.stop)
        finally:
            with contextlib.suppress(DatabaseError):
                self._sync_totals()

    def _finish(self, ranges: list[KeyRange], book: checkmod.CheckBook) -> list[CheckResult]:
        """Post-checks, then the job recorded finished (its ranges dropped); paused if a post-check halts."""
        db = self.ctx.db
        try:
            # A tenant run leaves the other tenants' rows: its post_checks are deferred to a full apply (Plan).
            post_checks = self.job.post_checks if self.ctx.options.tenant is None else ()
            post_results = self._job_checks("post_check", post_checks, book)
        except CheckFailedError as failed:
            # Not finished: the next run re-evaluates the post_checks (after an operator fix) before finishing.
            with db.transaction():
                self._save("paused", ranges, reason=str(failed))
            raise
        self._recorded_ranges = self.ctx.state.ranges(self.state_key)
        with db.transaction():
            self._save("finished", ranges)
            self.ctx.state.drop_ranges(self.state_key)
            if self.ctx.options.tenant is None and self.ctx.state.finish_tenant_states(self.step.id):
                self._event("the open per-tenant runs are finished with the job")
            self._event(f"finished: {self.shared.totals.processed} rows, {self.shared.totals.failed} quarantined")
        return post_results

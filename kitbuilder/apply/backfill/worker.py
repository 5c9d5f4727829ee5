"""One backfill worker: the batches of one key range on one database connection.

Each batch selects the next ``batch_size`` keys of the range after the cursor
whose rows still match the job's predicate, updates exactly the keys
[first, last] of those (still filtered by the predicate), and advances the
range's cursor in the same transaction. A killed or interrupted run therefore
resumes at the last committed cursor of every range: no row is processed
twice, none skipped.

Only a ``RowError`` (the database rejected one row's data) is handled here:
the failing batch is bisected down to single rows and a failing row is
quarantined with its error, unless --stop-on-error, or the error rate of this
run passes its threshold, which pauses the job. Every other database error
propagates: the open batch rolls back and the job stops, to resume exactly
there. Workers of one job share their counters (``Shared``); what they record
in kit state are increments, so none overwrites another's.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from kitbuilder import faults
from kitbuilder.apply import signals, state
from kitbuilder.apply.backfill.sql import JobSql
from kitbuilder.apply.context import RunContext
from kitbuilder.apply.db import Database, RowError, SystemicError


@dataclass
class Totals:
    processed: int = 0
    failed: int = 0
    batches: int = 0

    def frozen(self) -> state.JobTotals:
        return state.JobTotals(self.processed, self.failed, self.batches)

    def add(self, delta: state.JobTotals) -> None:
        self.processed += delta.processed
        self.failed += delta.failed
        self.batches += delta.batches


@dataclass(frozen=True)
class KeyRange:
    """Keys in (lo, hi] of a job; ``number`` None for an unsplit job (its cursor lives in the job's row)."""

    number: int | None
    lo: Any
    hi: Any
    cursor: Any  # where this run starts: the recorded cursor, else lo


class RowFailure(Exception):
    """--stop-on-error met a failing row: the job stops as failed (recorded by the job, not the worker)."""

    def __init__(self, key: Any, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


class PauseRequested(Exception):
    """This run's error rate passed the threshold: the job pauses (recorded by the job once workers stopped)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Located(Exception):
    """A systemic database error in a worker, with where that worker stopped (for the one-line message)."""

    def __init__(self, error: SystemicError, where: str) -> None:
        super().__init__(error.reason)
        self.error = error
        self.where = where


@dataclass
class Shared:
    """What the workers of one job share: the run, the job's SQL and limits, counters, and the stop flag."""

    ctx: RunContext
    step_id: str
    state_key: str
    sql: JobSql
    batch_size: int
    fused: bool  # PostgreSQL and a `set:` job: find and update a batch in one statement
    error_rate: float
    min_sample: int
    expected: int  # rows in scope when the run started (progress)
    ranges: int  # how many ranges the job is split into (0: unsplit)
    totals: Totals = field(default_factory=Totals)  # the job's, over all runs
    run_totals: Totals = field(default_factory=Totals)  # this run's new rows: the error-rate window
    known_quarantine: set[str] = field(default_factory=set)
    failing: set[str] = field(default_factory=set)  # quarantined keys in scope that still fail in this run
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def committed(self, delta: state.JobTotals, new_rows: state.JobTotals) -> None:
        """Account a committed batch (only after its transaction committed)."""
        with self.lock:
            self.totals.add(delta)
            self.run_totals.add(new_rows)
            done = self.run_totals.processed + self.run_totals.failed
        faults.point("backfill-committed")
        if self.ctx.on_rows is not None:
            self.ctx.on_rows(self.step_id, done, self.expected)

    def remaining_estimate(self) -> int:
        return max(0, self.expected - self.run_totals.processed)

    def check_error_rate(self) -> None:
        """PauseRequested when this run's new failures pass the threshold (after min_sample rows of this run).

        The window is this run's rows only: rerunning after a fix (or with a higher --error-rate) is not
        paused again by the failures that paused the previous run.
        """
        with self.lock:
            failed, seen = self.run_totals.failed, self.run_totals.processed + self.run_totals.failed
        if not failed or seen < self.min_sample or failed / seen <= self.error_rate:
            return
        raise PauseRequested(
            f"error rate {failed / seen:.2%} over {self.error_rate:.2%} after {seen} rows ({failed} quarantined)"
        )


class RangeWorker:
    """The batches of one key range on ``db`` (the run's own connection, or a worker's)."""

    def __init__(self, shared: Shared, db: Database, key_range: KeyRange) -> None:
        self.shared = shared
        self.db = db
        self.range = key_range
        self.store = state.StateStore(db)
        self.cursor: Any = key_range.cursor
        self.rows_this_run = 0

    def _key(self, value: Any) -> Any:
        sql = self.shared.sql
        return state.key_value(self.shared.step_id, f"{sql.table}.{sql.key}", value)

    def run(self) -> Any:
        """Batches from the cursor to the end of the range; returns the last cursor.

        Stops between batches when another worker failed (``shared.stop``) or a signal arrived.
        """
        shared = self.shared
        try:
            while True:
                if shared.stop.is_set():
                    return self.cursor
                pending = signals.received()
                if pending is not None:
                    raise signals.interrupted_run(pending)
                if shared.fused:
                    cursor, finished = self._fused_batch(self.cursor)
                    if finished:
                        return self.cursor
                else:
                    first, last, count = self._next_batch(self.cursor)
                    if not count:
                        return self.cursor
                    cursor = self._process(first, last, count, self.cursor)
                self.cursor = cursor
                shared.check_error_rate()
                if self.db is shared.ctx.db:
                    shared.ctx.lock.renew()  # the SQLite lease; a worker's own connection holds no lease
        except SystemicError as exc:
            where = f"{shared.sql.key}={state.encode_key(self.cursor)}" if self.cursor is not None else "its start"
            if self.range.number is not None:
                where += f" (range {self.range.number + 1} of {shared.ranges})"
            raise Located(exc, where) from exc

    def _fault(self) -> None:
        faults.point("backfill-batch")
        if self.range.number is not None:
            faults.point(f"backfill-batch-range{self.range.number}")

    def _after(self, cursor: Any) -> Any:
        """Where the next batch starts (exclusive): the cursor, else the range's lower bound."""
        return cursor if cursor is not None else self.range.lo

    def _next_batch(self, cursor: Any) -> tuple[Any, Any, int]:
        sql, params = self.shared.sql.next_batch(self._after(cursor), self.range.hi, self.shared.batch_size)
        first, last, count = self.db.query(sql, params)[0]
        return self._key(first), self._key(last), int(count)

    def _state_writes(
        self, cursor_from: Any, cursor_to: Any, delta: state.JobTotals, size: int, failed: int, clock: float
    ) -> list[state.Statement]:
        shared = self.shared
        return self.store.batch_statements(
            job=shared.state_key,
            run_id=shared.ctx.run_id,
            range_no=self.range.number,
            cursor_from=cursor_from,
            cursor_to=cursor_to,
            delta=delta,
            size=size,
            processed=delta.processed,
            failed=failed,
            duration_ms=int((time.monotonic() - clock) * 1000),
        )

    def _commit_batch(self, delta: state.JobTotals) -> None:
        self.rows_this_run += delta.processed
        self.shared.committed(delta, state.JobTotals(delta.processed, delta.failed, 1))

    def _fused_batch(self, cursor: Any) -> tuple[Any, bool]:
        """Find, apply and record the next batch in one statement; returns (new cursor, range finished).

        One round trip: the connection is in autocommit, so the statement is the batch's transaction
        (rows, cursor, totals and batch row commit together, or nothing does, whenever a kill comes).
        """
        shared = self.shared
        self._fault()
        record = self.store.batch_record_ctes(
            job=shared.state_key,
            run_id=shared.ctx.run_id,
            range_no=self.range.number,
            cursor_from=cursor,
            source="kit_done",
        )
        sql, params = shared.sql.fused_batch(self._after(cursor), self.range.hi, shared.batch_size, record)
        try:
            last, changed = self.db.query(sql, params)[0]
        except RowError:
            # Some row in the batch fails (the statement changed nothing): find the batch again and bisect it.
            first, last, count = self._next_batch(cursor)
            if not count:
                return cursor, False  # the failing rows no longer match (the site changed them): look again
            return self._process(first, last, count, cursor), False
        if last is None:
            return cursor, True
        self._commit_batch(state.JobTotals(int(changed), 0, 1))
        return self._key(last), False

    def _process(self, first: Any, last: Any, count: int, cursor: Any) -> Any:
        """Apply the batch [first, last] of ``count`` rows (bisecting on a row error); returns the new cursor."""
        clock = time.monotonic()
        sql, params = self.shared.sql.update_range(first, last)
        try:
            with self.db.transaction():
                changed = self.db.execute(sql, params)
                self._fault()
                delta = state.JobTotals(changed, 0, 1)
                self.db.execute_batch(self._state_writes(cursor, last, delta, count, 0, clock))
        except RowError as exc:
            if count <= 1:
                return self._quarantine(first, exc.reason, cursor)
            faults.point("backfill-bisect")
            keys_sql, keys_params = self.shared.sql.keys_between(first, last)
            keys = [self._key(row[0]) for row in self.db.query(keys_sql, keys_params)]
            faults.point("backfill-bisect-keys")
            if not keys:
                # The site changed every row of the batch since it was chosen (a live table): nothing of it is left
                # to apply or to quarantine. The next batch starts after the cursor, as it would have.
                return cursor
            if len(keys) == 1:
                # One row still matches. Retried as the range of exactly that row: it commits, or that row is
                # quarantined. A wider range would also take a row the site adds or changes meanwhile, and that
                # row's failure would quarantine this one; halving a batch of one would repeat for ever.
                return self._process(keys[0], keys[0], 1, cursor)
            middle = len(keys) // 2
            cursor = self._process(keys[0], keys[middle - 1], middle, cursor)
            return self._process(keys[middle], keys[-1], len(keys) - middle, cursor)
        self._commit_batch(delta)
        return last

    def _quarantine(self, key: Any, message: str, cursor: Any) -> Any:
        shared = self.shared
        if shared.ctx.options.stop_on_error:
            raise RowFailure(key, message)
        encoded = state.encode_key(key)
        with shared.lock:
            known = encoded in shared.known_quarantine
        delta = state.JobTotals(0, 0 if known else 1, 0)
        with self.db.transaction():
            self.store.quarantine(job=shared.state_key, key=key, error=message, run_id=shared.ctx.run_id)
            self.db.execute_batch(self._state_writes(cursor, key, delta, 1, 1, time.monotonic()))
        with shared.lock:
            shared.known_quarantine.add(encoded)
            shared.failing.add(encoded)
        self._commit_batch(delta)
        return key

"""Key ranges of a split backfill: cutting the key space, the cursors a job reports, per-range progress."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kitbuilder.apply import state
from kitbuilder.apply.backfill.sql import JobSql
from kitbuilder.apply.backfill.worker import KeyRange, Totals
from kitbuilder.apply.db import Database
from kitbuilder.apply.results import RangeProgress

# A table the planner estimates above this many rows is cut from a sample of about SAMPLE_ROWS rows.
SAMPLE_ABOVE = 200_000
SAMPLE_ROWS = 50_000


def plan_bounds(db: Database, sql: JobSql, pieces: int, to_key: Callable[[Any], Any]) -> list[tuple[Any, Any]]:
    """(lo, hi] bounds cutting the rows in scope into ``pieces`` ranges of about equal rows, in key order.

    The cuts come from one ordered query on PostgreSQL (``JobSql.boundaries``), over a sample of the
    pages of a large table (a sample that holds no matching row falls back to every row). Only the
    balance depends on them: the first range is open below and the last open above, so together
    they cover every key, including keys inserted later outside the keys seen now; consecutive equal
    cuts are merged, so no range is repeated.
    """
    estimate = db.query_value(*sql.table_rows())
    values = None
    if estimate is not None and float(estimate) > SAMPLE_ABOVE:
        values = db.query_value(*sql.boundaries(pieces, 100.0 * SAMPLE_ROWS / float(estimate)))
    if not values:
        values = db.query_value(*sql.boundaries(pieces))
    cuts: list[Any] = []
    for value in values or []:
        key = to_key(value)
        if key is not None and (not cuts or cuts[-1] != key):
            cuts.append(key)
    edges = [None, *cuts, None]
    return list(zip(edges, edges[1:], strict=False))


def row_cursor(ranges: Sequence[KeyRange]) -> Any:
    """The cursor the job's own row keeps: the unsplit job's (a split job's live in its ranges)."""
    return ranges[0].cursor if len(ranges) == 1 and ranges[0].number is None else None


def last_cursor(ranges: Sequence[KeyRange]) -> Any:
    """The cursor reported for the job: the unsplit job's, or that of the last range that has one."""
    return next((r.cursor for r in reversed(ranges) if r.cursor is not None), None)


def progress(
    started: Sequence[KeyRange],
    ranges: Sequence[KeyRange],
    *,
    recorded: Sequence[state.RangeRecord],
    totals: Totals,
    rows: Mapping[int | None, int],
) -> tuple[RangeProgress, ...]:
    """Per-range progress for the report: where each range resumed and got to, its rows over all runs
    (``recorded``; an unsplit job's are the job's ``totals``) and this run's (``rows``, by range number)."""
    by_number = {r.range_no: r for r in recorded}
    out = []
    for before, after in zip(started, ranges, strict=True):
        row = by_number.get(after.number) if after.number is not None else None
        if row is not None:
            processed, failed, batches = row.rows_processed, row.rows_failed, row.batches
        else:
            processed, failed, batches = totals.processed, totals.failed, totals.batches
        out.append(
            RangeProgress(
                number=after.number or 0,
                lo=after.lo,
                hi=after.hi,
                resumed_from=before.cursor,
                cursor=after.cursor,
                rows_processed=processed,
                rows_failed=failed,
                batches=batches,
                rows_this_run=rows.get(after.number, 0),
            )
        )
    return tuple(out)

"""``kit status``: what a database holds, read from the state tables without changing them."""

from __future__ import annotations

from kitbuilder.apply import signals
from kitbuilder.apply.db_results import BackfillProgress, LockHolder, RangeState, StatusReport
from kitbuilder.apply.state import JobRecord, StateStore
from kitbuilder.ops.apply.session import connected, describe


def status(db_url: str) -> StatusReport:
    """What is applied, running or paused; backfill progress with rate, remaining rows and ETA; the lock."""
    with signals.handling(), connected(db_url, read_only=True) as database:
        store = StateStore(database)
        described = describe(database)
        if not store.exists():
            return StatusReport(described)
        lease = store.lease_holder()
        return StatusReport(
            described,
            migrations=tuple(store.migrations().values()),
            backfills=tuple(_progress(store, job) for job in store.jobs()),
            runs=tuple(store.recent_runs()),
            lock=LockHolder.of(lease) if lease is not None else None,
        )


def _progress(store: StateStore, job: JobRecord) -> BackfillProgress:
    done = job.status in ("finished", "reverted")
    rate = store.job_rate(job.job) if job.status != "reverted" else None
    remaining = job.remaining if not done else job.remaining or 0
    eta = round(remaining / rate, 1) if remaining is not None and rate and not done else None
    return BackfillProgress(
        job=job.job,
        status=job.status,
        pause_reason=job.pause_reason,
        cursor=job.cursor,
        rows_processed=job.rows_processed,
        rows_failed=job.rows_failed,
        batches=job.batches,
        updated_at=job.updated_at,
        remaining=remaining,
        rows_per_second=round(rate, 1) if rate is not None else None,
        eta_seconds=eta,
        ranges=tuple(
            RangeState(r.range_no, r.lo, r.hi, r.cursor, r.rows_processed, r.rows_failed, r.batches)
            for r in store.ranges(job.job)
        ),
    )

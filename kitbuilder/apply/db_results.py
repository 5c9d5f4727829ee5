"""What ``kit rollback``, ``status`` and ``repair`` report, as frozen values.

``--json`` prints ``to_json`` (checked against ``schemas/rollback-report``, ``status-report`` and
``repair-report`` in the tests); the text renderers read the fields, never the documents.
"""

from __future__ import annotations

from dataclasses import dataclass

from kitbuilder.apply.results import DatabaseInfo, KeyValue
from kitbuilder.apply.state import LeaseHolder, MigrationRecord, RunRecord


@dataclass(frozen=True)
class StepRef:
    """A step of the kit a rollback reverts (or, in a dry run, would revert)."""

    id: str
    kind: str
    phase: str

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind, "phase": self.phase}


@dataclass(frozen=True)
class RollbackResult:
    """A rollback: the steps reverted (``dry_run``: that would be), newest first.

    ``nothing_applied``: the database has no kit state tables at all, so there was nothing to look at.
    """

    run_id: str
    to_phase: str
    dry_run: bool
    steps: tuple[StepRef, ...] = ()
    nothing_applied: bool = False

    @property
    def step_status(self) -> str:
        """What happened to each step: "reverted", or nothing yet in a dry run."""
        return "" if self.dry_run else "reverted"

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"ok": True, "runId": self.run_id}
        listed = "wouldRevert" if self.dry_run else "reverted"
        if self.nothing_applied:
            data.update({"dryRun": self.dry_run, "toPhase": self.to_phase, listed: [], "note": "nothing applied"})
        elif self.dry_run:
            data.update({"dryRun": True, listed: [step.to_json() for step in self.steps]})
        else:
            data.update({"toPhase": self.to_phase, listed: [{**s.to_json(), "status": "reverted"} for s in self.steps]})
        return data


@dataclass(frozen=True)
class RangeState:
    """One recorded key range of a split backfill (kit_backfill_ranges): keys in (lo, hi], done up to cursor."""

    number: int
    lo: KeyValue
    hi: KeyValue
    cursor: KeyValue
    rows_processed: int
    rows_failed: int
    batches: int

    def to_json(self) -> dict[str, object]:
        return {
            "range": self.number,
            "lo": self.lo,
            "hi": self.hi,
            "cursor": self.cursor,
            "rowsProcessed": self.rows_processed,
            "rowsFailed": self.rows_failed,
            "batches": self.batches,
        }


@dataclass(frozen=True)
class BackfillProgress:
    """One backfill job's state with its measured rate and what is left (``kit status``)."""

    job: str
    status: str
    pause_reason: str | None
    cursor: KeyValue
    rows_processed: int
    rows_failed: int
    batches: int
    updated_at: str
    remaining: int | None
    rows_per_second: float | None
    eta_seconds: float | None
    # A job split for --workers: its ranges, each with its own cursor (the job's own cursor is then null).
    ranges: tuple[RangeState, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "job": self.job,
            "status": self.status,
            "pauseReason": self.pause_reason,
            "cursor": self.cursor,
            "rowsProcessed": self.rows_processed,
            "rowsFailed": self.rows_failed,
            "batches": self.batches,
            "updatedAt": self.updated_at,
            "remaining": self.remaining,
            "rowsPerSecond": self.rows_per_second,
            "etaSeconds": self.eta_seconds,
            "ranges": [r.to_json() for r in self.ranges],
        }


@dataclass(frozen=True)
class LockHolder:
    """The SQLite apply lease as status shows it (PostgreSQL's advisory lock is never reported)."""

    run_id: str
    host: str
    pid: int
    expires_at: str  # ISO 8601 UTC with a Z

    @classmethod
    def of(cls, lease: LeaseHolder) -> LockHolder:
        # The lease row may keep the offset as "+00:00"; status says UTC the one way its schema allows.
        return cls(lease.run_id, lease.host, lease.pid, lease.expires_at.replace("+00:00", "Z"))

    def to_json(self) -> dict[str, object]:
        return {"runId": self.run_id, "host": self.host, "pid": self.pid, "expiresAt": self.expires_at}


@dataclass(frozen=True)
class StatusReport:
    """What a database holds: migrations and seeds, backfills, the last runs, the lock (empty without state)."""

    database: DatabaseInfo
    migrations: tuple[MigrationRecord, ...] = ()
    backfills: tuple[BackfillProgress, ...] = ()
    runs: tuple[RunRecord, ...] = ()
    lock: LockHolder | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "ok": True,
            "database": self.database.to_json(),
            "migrations": [record.to_json() for record in self.migrations],
            "backfills": [job.to_json() for job in self.backfills],
            "runs": [run.to_json() for run in self.runs],
            "lock": self.lock.to_json() if self.lock is not None else None,
        }


@dataclass(frozen=True)
class RepairResult:
    """An operator decision recorded in kit_events: on which step (or ``kit_lock``), and what was recorded."""

    run_id: str
    id: str
    detail: str

    def to_json(self) -> dict[str, object]:
        return {"ok": True, "runId": self.run_id, "id": self.id, "detail": self.detail}

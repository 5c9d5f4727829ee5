"""What an apply run reports: step results, dry-run plan entries and the run report, as frozen values.

Evidence (report.json, metrics.prom), ``--json`` and the text rendering all read these
fields; ``ApplyReport.to_json`` is checked against ``schemas/apply-report.schema.json``
so a field the contract does not know (or a missing one) is a bug caught in tests, not a
silent difference between what kit says and what it writes. Durations are whole
milliseconds (``durationMs``) everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from kitbuilder.apply.checks import CheckResult
from kitbuilder.core import schemas
from kitbuilder.core.manifest import KitInfo

# A backfill key as the state tables keep it (a cursor, a range bound): a JSON scalar; None before the first batch.
KeyValue = int | float | str | None


@dataclass(frozen=True)
class MigrationResult:
    kind: ClassVar[str] = "migration"
    id: str
    phase: str
    checksum: str
    status: Literal["succeeded", "skipped"]
    reason: str | None = None  # why skipped
    duration_ms: int | None = None
    verify: Literal["passed", "none"] | None = None
    resolved_by: Literal["verify"] | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"id": self.id, "phase": self.phase, "kind": self.kind, "checksum": self.checksum}
        data["status"] = self.status
        if self.reason is not None:
            data["reason"] = self.reason
        if self.resolved_by is not None:
            data["resolvedBy"] = self.resolved_by
        if self.duration_ms is not None:
            data["durationMs"] = self.duration_ms
        if self.verify is not None:
            data["verify"] = self.verify
        return data


@dataclass(frozen=True)
class SeedResult:
    kind: ClassVar[str] = "seed"
    id: str
    phase: str
    checksum: str
    status: Literal["succeeded", "skipped"]
    reason: str | None = None
    rows: int | None = None
    table: str | None = None
    duration_ms: int | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"id": self.id, "phase": self.phase, "kind": self.kind, "checksum": self.checksum}
        data["status"] = self.status
        if self.reason is not None:
            data["reason"] = self.reason
        if self.status == "succeeded":
            data.update({"rows": self.rows, "table": self.table, "durationMs": self.duration_ms})
        return data


@dataclass(frozen=True)
class RangeProgress:
    """One key range of a backfill (kit apply --workers): keys in (lo, hi], where it resumed and got to.

    An unsplit job is one range with both bounds null. Row counts are over all runs, ``rows_this_run`` this run's.
    """

    number: int
    lo: KeyValue
    hi: KeyValue
    resumed_from: KeyValue
    cursor: KeyValue
    rows_processed: int
    rows_failed: int
    batches: int
    rows_this_run: int

    def to_json(self) -> dict[str, object]:
        return {
            "range": self.number,
            "lo": self.lo,
            "hi": self.hi,
            "resumedFrom": self.resumed_from,
            "cursor": self.cursor,
            "rowsProcessed": self.rows_processed,
            "rowsFailed": self.rows_failed,
            "batches": self.batches,
            "rowsThisRun": self.rows_this_run,
        }


@dataclass(frozen=True)
class BackfillResult:
    kind: ClassVar[str] = "backfill"
    id: str
    phase: str
    checksum: str
    table: str
    batch_size: int
    remaining_before: int
    status: Literal["finished", "skipped"]
    remaining_after: int
    rows_processed: int
    rows_failed: int
    reason: str | None = None
    resumed_from: KeyValue = None
    cursor: KeyValue = None
    batches: int = 0
    rows_this_run: int = 0
    failed_this_run: int = 0
    error_rate: float = 0.0
    duration_ms: int = 0
    rows_per_second: float | None = None
    metric: str | None = None  # the job's `metric:`, the gauge name of its remaining rows
    tenant: str | None = None  # set when --tenant limited the job to one tenant
    pre_checks: tuple[CheckResult, ...] = ()
    post_checks: tuple[CheckResult, ...] = ()
    workers: int = 1  # --workers of the run
    ranges: tuple[RangeProgress, ...] = ()  # the key ranges the job ran in (one, unbounded, when unsplit)

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "id": self.id,
            "phase": self.phase,
            "kind": self.kind,
            "checksum": self.checksum,
            "table": self.table,
            "batchSize": self.batch_size,
            "remainingBefore": self.remaining_before,
            "status": self.status,
        }
        if self.status == "skipped":
            data["reason"] = self.reason or ""
        else:
            data.update(
                {
                    "resumedFrom": self.resumed_from,
                    "cursor": self.cursor,
                    "batches": self.batches,
                    "rowsThisRun": self.rows_this_run,
                    "failedThisRun": self.failed_this_run,
                    "errorRate": self.error_rate,
                    "durationMs": self.duration_ms,
                    "rowsPerSecond": self.rows_per_second,
                    "preChecks": [c.to_json() for c in self.pre_checks],
                    "postChecks": [c.to_json() for c in self.post_checks],
                    "workers": self.workers,
                    "ranges": [r.to_json() for r in self.ranges],
                }
            )
        data.update(
            {
                "rowsProcessed": self.rows_processed,
                "rowsFailed": self.rows_failed,
                "remainingAfter": self.remaining_after,
            }
        )
        if self.metric is not None:
            data["metric"] = self.metric
        if self.tenant is not None:
            data["tenant"] = self.tenant
        return data


StepResult = MigrationResult | SeedResult | BackfillResult


@dataclass(frozen=True)
class PlannedStep:
    """A step of a real run's plan."""

    id: str
    kind: str
    phase: str
    checksum: str

    def to_json(self) -> dict[str, object]:
        return {"id": self.id, "kind": self.kind, "phase": self.phase, "checksum": self.checksum}


@dataclass(frozen=True)
class DryStep:
    """A migration or seed in a dry run: its status, and the SQL a migration would run."""

    id: str
    kind: str
    phase: str
    checksum: str
    status: Literal["pending", "applied", "interrupted"]
    transactional: bool = True
    sql: str = ""
    table: str | None = None
    files: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "id": self.id,
            "kind": self.kind,
            "phase": self.phase,
            "checksum": self.checksum,
            "status": self.status,
        }
        if self.kind == "migration":
            data.update({"transactional": self.transactional, "sql": self.sql})
        else:
            data.update({"table": self.table, "files": list(self.files)})
        return data


CountBasis = Literal["exact", "current", "upper-bound"]


@dataclass(frozen=True)
class DryBackfill:
    """A backfill in a dry run: how many rows it would change, and how far that number can be trusted.

    ``count_basis``: ``exact`` when nothing before the job is pending, so the predicate is counted
    on the data the job will see; ``current`` when earlier steps of the kit are pending and may
    change that data, or the table does not exist yet (the count is of the database as it is now);
    ``upper-bound`` when the predicate cannot be evaluated yet (it names a column or table the kit
    creates) and every row of the job's table was counted instead.
    """

    id: str
    phase: str
    checksum: str
    table: str
    table_present: bool
    predicate: str
    would_update: int
    by_tenant: dict[str, int]
    batch_size: int
    count_basis: CountBasis
    count_reason: str
    status: str  # pending | finished | active | paused | failed
    sql: str
    tenant: str | None = None
    kind: ClassVar[str] = "backfill"

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "id": self.id,
            "kind": self.kind,
            "phase": self.phase,
            "checksum": self.checksum,
            "status": self.status,
            "table": self.table,
            "tablePresent": self.table_present,
            "predicate": self.predicate,
            "sql": self.sql,
            "wouldUpdate": self.would_update,
            "countBasis": self.count_basis,
            "countReason": self.count_reason,
            "byTenant": dict(self.by_tenant),
            "batchSize": self.batch_size,
        }
        if self.tenant is not None:
            data["tenant"] = self.tenant
        return data


PlanEntry = PlannedStep | DryStep | DryBackfill


@dataclass(frozen=True)
class Deferred:
    """What a ``--tenant`` run left for a full apply."""

    steps: tuple[str, ...]
    checks: tuple[str, ...]
    reason: str

    def to_json(self) -> dict[str, object]:
        return {"steps": list(self.steps), "checks": list(self.checks), "reason": self.reason}


@dataclass(frozen=True)
class RunError:
    kind: str
    exit_code: int
    message: str

    def to_json(self) -> dict[str, object]:
        return {"kind": self.kind, "exitCode": self.exit_code, "message": self.message}


@dataclass(frozen=True)
class Evidence:
    directory: str
    report_sha256: str

    def to_json(self) -> dict[str, object]:
        return {"directory": self.directory, "reportSha256": self.report_sha256}


@dataclass(frozen=True)
class AppliedKit:
    """The kit a run applied: where it was read, its digest, and the manifest's kit block."""

    path: str
    sha256: str
    info: KitInfo

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "sha256": self.sha256, **self.info.to_json()}


@dataclass(frozen=True)
class DatabaseInfo:
    """The database a command worked on, as apply and status report it."""

    dialect: str
    version: str
    url: str  # the --db URL with any password replaced

    def to_json(self) -> dict[str, object]:
        return {"dialect": self.dialect, "version": self.version, "url": self.url}


@dataclass(frozen=True)
class ApplyReport:
    run_id: str
    argv: tuple[str, ...]
    dry_run: bool
    kit: AppliedKit
    signers: tuple[str, ...]
    verify_checks: tuple[str, ...]
    database: DatabaseInfo
    status: Literal["dry-run", "running", "succeeded", "failed", "interrupted"]
    plan: tuple[PlanEntry, ...] = ()
    steps: tuple[StepResult, ...] = ()
    checks_before: dict[str, int | None] = field(default_factory=dict)
    checks_after: tuple[CheckResult, ...] = ()
    lock_wait_seconds: float | None = None
    tenant: str | None = None
    deferred: Deferred | None = None
    error: RunError | None = None
    evidence: Evidence | None = None
    images: dict[str, object] | None = None  # `--registry`: the push document (ops/apply_and_push)

    @property
    def kit_name(self) -> str:
        return self.kit.info.name

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "reportVersion": 1,
            "runId": self.run_id,
            "argv": list(self.argv),
            "dryRun": self.dry_run,
            "kit": self.kit.to_json(),
            "verify": {"signers": list(self.signers), "checks": list(self.verify_checks)},
            "database": self.database.to_json(),
            "plan": [entry.to_json() for entry in self.plan],
            "steps": [step.to_json() for step in self.steps],
            "checks": {"before": dict(self.checks_before), "after": [c.to_json() for c in self.checks_after]},
            "status": self.status,
        }
        if self.lock_wait_seconds is not None:
            data["lockWaitSeconds"] = self.lock_wait_seconds
        if self.tenant is not None:
            data["tenant"] = self.tenant
        if self.deferred is not None:
            data["deferred"] = self.deferred.to_json()
        if self.error is not None:
            data["error"] = self.error.to_json()
        if self.evidence is not None:
            data["evidence"] = self.evidence.to_json()
        if self.images is not None:
            data["images"] = self.images
        return data

    def check_contract(self) -> None:
        """Raise FormatError if ``to_json`` breaks the published schema (a bug in kit, found by the tests)."""
        document = {"ok": self.error is None, **self.to_json()}
        schemas.validate("apply-report", document, what="apply report")

"""kit apply / rollback / status / repair: a verified kit's steps against a database.

The kit is verified and extracted in one pass into a private staging
directory; only those verified bytes are read afterwards, so a kit swapped on
disk after verification is never applied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitbuilder import faults
from kitbuilder.apply import backfill, checks, migrations, results, signals, sqlsplit
from kitbuilder.apply import db as dbmod
from kitbuilder.apply.context import ApplyOptions, RowProgress, RunContext
from kitbuilder.apply.evidence import check_artifacts_dir, write_evidence
from kitbuilder.apply.lock import ApplyLock, live_kit_process, pid_alive
from kitbuilder.apply.plan import LAST_PHASE, Plan, Step, build_plan, phase_key, validate_plan, validate_reverts
from kitbuilder.apply.state import StateStore
from kitbuilder.core.manifest import IMAGES_DIR
from kitbuilder.errors import (
    DatabaseError,
    FailedRunError,
    HostIOError,
    InterruptedRun,
    KitError,
    LockBusyError,
    UsageError,
)
from kitbuilder.ops.verify import VerifyOptions, VerifyReport, verify_kit


@dataclass(frozen=True)
class VerifiedKit:
    report: VerifyReport
    staging: Path
    plan: Plan


STAGING_PREFIX = "kit-apply-"
DEFAULT_ARTIFACTS = "artifacts"


def _remove_stale_staging(root: Path) -> None:
    """Staging dirs of runs that were killed (their pid is gone) are removed by the next run."""
    for candidate in root.glob(f"{STAGING_PREFIX}*-*"):
        pid_text = candidate.name[len(STAGING_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not pid_alive(int(pid_text)):
            shutil.rmtree(candidate, ignore_errors=True)


@contextlib.contextmanager
def verified_kit(path: Path, options: VerifyOptions) -> Iterator[VerifiedKit]:
    """Verify ``path`` while extracting it to a private staging dir; removed afterwards whatever happens."""
    root = Path(tempfile.gettempdir())
    _remove_stale_staging(root)
    staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=root))
    try:
        # Container images are checked like every member but not staged: apply never reads them, and
        # `--registry` pushes them straight from the kit.
        report = verify_kit(
            path, options, extract_to=staging / "kit", extract_only=lambda name: not name.startswith(f"{IMAGES_DIR}/")
        )
        if report.manifest.delta is not None:
            raise UsageError(f"{path}: is a delta kit; `kit patch BASE {path.name} --out NEW` first, then apply NEW")
        yield VerifiedKit(report=report, staging=staging / "kit", plan=build_plan(report.manifest, staging / "kit"))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def _connected(
    url: str, *, read_only: bool = False, create: bool = False, lock_timeout: float = 30.0
) -> Iterator[dbmod.Database]:
    """The database for one command; a signal during its work stops at the next safe point (signals.deferred)."""
    database = dbmod.connect(url, read_only=read_only, create=create, lock_timeout=lock_timeout)
    try:
        with signals.deferred(database.interrupt):
            yield database
    finally:
        database.close()


def _context(
    database: dbmod.Database, kit: VerifiedKit, options: ApplyOptions, run_id: str, on_rows: RowProgress | None
) -> RunContext:
    lock = ApplyLock(database, run_id, timeout=options.lock_timeout)
    return RunContext(
        db=database,
        run_id=run_id,
        kit=kit.report.manifest.kit,
        kit_sha256=kit.report.kit_sha256,
        lock=lock,
        options=options,
        on_rows=on_rows,
    )


def _plan_entry(ctx: RunContext, step: Step, pending_before: tuple[str, ...]) -> results.PlanEntry:
    if step.kind == "backfill":
        return backfill.dry_run(ctx, step, pending_before=pending_before)
    status: Any = migrations.status_of(ctx, step) if ctx.state.exists() else "pending"
    if step.kind == "migration":
        return results.DryStep(
            step.id,
            step.kind,
            step.phase,
            step.checksum,
            status,
            transactional=step.migration.options.transactional,
            sql=step.text("up") or "",
        )
    return results.DryStep(
        step.id, step.kind, step.phase, step.checksum, status, table=step.seed.options.table, files=tuple(step.files)
    )


def _dry_plan(ctx: RunContext, plan: Plan) -> tuple[results.PlanEntry, ...]:
    entries: list[results.PlanEntry] = []
    pending: list[str] = []
    for step in plan.steps:
        entry = _plan_entry(ctx, step, tuple(pending))
        entries.append(entry)
        if getattr(entry, "status", "pending") not in ("applied", "finished"):
            pending.append(step.id)
    return tuple(entries)


def _check_tenant_value(database: dbmod.Database, plan: Plan, tenant: str) -> None:
    """``--tenant`` must be a value each tenant column can hold, before the first statement.

    PostgreSQL types the parameter by its column, so ``--tenant abc`` against an integer column would
    fail only when that backfill runs, after earlier steps were applied. A column that exists is probed;
    one the kit's migrations create before the job (CREATE TABLE, ADD COLUMN) is checked by casting the
    value to the declared type. (SQLite compares loosely: a value its column cannot hold matches no row.)
    """
    scripts: list[str] = []
    for step in plan.steps:
        if step.kind == "migration":
            scripts.append(step.text("up") or "")
        job = step.backfill if step.kind == "backfill" else None
        if job is None or not job.tenant_column:
            continue
        try:
            if database.table_exists(job.table) and _has_column(database, job.table, job.tenant_column):
                database.query(
                    f"SELECT 1 FROM {job.table} WHERE {job.tenant_column} = :tenant LIMIT 0", {"tenant": tenant}
                )
            elif database.dialect == "postgresql":
                _cast_to_declared_type(database, scripts, job.table, job.tenant_column, tenant)
        except (dbmod.RowError, dbmod.StatementError) as exc:
            raise UsageError(
                f"--tenant {tenant!r}: backfill {step.id} cannot compare it with {job.table}.{job.tenant_column} "
                f"({exc.reason}); nothing was applied"
            ) from exc


def _has_column(database: dbmod.Database, table: str, column: str) -> bool:
    """Whether ``table`` has ``column`` now (a column the kit adds later does not exist yet); True when unknown."""
    existing = {name.lower() for name in database.columns(table)}
    return not existing or column.strip('"').lower() in existing


def _cast_to_declared_type(database: dbmod.Database, scripts: list[str], table: str, column: str, tenant: str) -> None:
    """Cast ``tenant`` to the type the kit's migrations declare for ``table.column`` (nothing when none is).

    RowError when the type cannot hold the value. A type the kit itself creates (an enum, a domain) is not
    known yet: the backfill refuses the value then.
    """
    declared = None
    for script in scripts:
        declared = sqlsplit.declared_column_type(script, table, column) or declared
    if declared is None or database.query_value("SELECT to_regtype(:type) IS NOT NULL", {"type": declared}) is not True:
        return
    database.query(f"SELECT CAST(CAST(:tenant AS text) AS {declared})", {"tenant": tenant})


def apply_kit(
    path: Path,
    db_url: str,
    verify_options: VerifyOptions,
    options: ApplyOptions,
    *,
    argv: list[str],
    artifacts: Path | None = None,
    on_rows: RowProgress | None = None,
    on_step: Any = None,
    preflight: Callable[[], None] | None = None,
) -> results.ApplyReport:
    """Apply a kit; returns the report (also written under ``artifacts``). Raises KitError on failure.

    Everything the run depends on is checked before its first statement: the plan against the
    options (``--tenant``) and the database's grammar, ``preflight`` (e.g. the registry of
    ``--registry``), and that the evidence can be written. A real run always writes evidence (under
    ``artifacts``, default ./artifacts); a dry run only when ``artifacts`` is given, marked as such.

    SIGINT/SIGTERM stop the run at the next safe point: the run is recorded
    ``interrupted``, the lock released, the evidence written, and InterruptedRun raised.
    """
    run_id = uuid.uuid4().hex
    argv = dbmod.redact_argv(argv)  # captured once, redacted: report.json, --json and kit_runs.argv
    evidence_dir = artifacts if artifacts is not None or options.dry_run else Path(DEFAULT_ARTIFACTS)
    with (
        signals.handling(),
        verified_kit(path, verify_options) as kit,
        _connected(db_url, read_only=options.dry_run, create=True, lock_timeout=options.lock_timeout) as database,
    ):
        ctx = _context(database, kit, options, run_id, on_rows)
        manifest = kit.report.manifest
        validate_plan(kit.plan, dialect=database.dialect, tenant=options.tenant)
        backfill.check_workers(options.workers, database.dialect)
        if options.tenant is not None:
            _check_tenant_value(database, kit.plan, options.tenant)
        if preflight is not None:
            preflight()
        if evidence_dir is not None:
            check_artifacts_dir(evidence_dir)
        plan = kit.plan.limited_to_tenant() if options.tenant is not None else kit.plan
        deferred = (
            results.Deferred(
                plan.deferred_steps,
                plan.deferred_checks,
                f"--tenant {options.tenant} leaves the phase of the first backfill unfinished for other tenants; "
                "its checks and later phases run in a full apply (without --tenant)",
            )
            if plan.deferred_steps or plan.deferred_checks
            else None
        )
        report = results.ApplyReport(
            run_id=run_id,
            argv=tuple(argv),
            dry_run=options.dry_run,
            kit={"path": str(path), "sha256": kit.report.kit_sha256, **manifest.kit.to_json()},
            signers=tuple(kit.report.signers),
            verify_checks=tuple(kit.report.checks),
            database={"dialect": database.dialect, "version": database.version(), "url": database.url},
            status="running",
            tenant=options.tenant,
            deferred=deferred,
        )
        if options.dry_run:
            report = dataclasses.replace(report, plan=_dry_plan(ctx, plan), status="dry-run")
            if evidence_dir is None:
                return report
            directory, digest = _write_evidence(evidence_dir, report)
            return dataclasses.replace(report, evidence=results.Evidence(str(directory), digest))
        # The lock first, then the state tables: two first runs must not create them together.
        ctx.lock.acquire()
        report = dataclasses.replace(
            report,
            lock_wait_seconds=round(ctx.lock.waited, 3),
            plan=tuple(results.PlannedStep(s.id, s.kind, s.phase, s.checksum) for s in plan.steps),
        )
        report, failure = _run_steps(ctx, kit, plan, report, argv, on_step)
        assert evidence_dir is not None
        # The outcome is decided: recording it is not stopped by a signal arriving now, and evidence that cannot
        # be written (a full --artifacts disk) neither hides what the database did nor skips kit_runs.
        with signals.shielded():
            report, failure = _record(ctx, evidence_dir, report, failure)
        if failure is not None:
            raise FailedRunError(failure, report=report.to_json()) from failure
        return report


def _write_evidence(artifacts: Path, report: results.ApplyReport) -> tuple[Path, str]:
    try:
        return write_evidence(artifacts, report)
    except OSError as exc:
        raise HostIOError.from_os_error(exc, path=exc.filename or artifacts, action="write the run's evidence") from exc


def _record(
    ctx: RunContext, artifacts: Path, report: results.ApplyReport, failure: KitError | None
) -> tuple[results.ApplyReport, KitError | None]:
    """Write the evidence, record the run's end, release the lock; returns the report and the error to raise."""
    try:
        directory, digest = _write_evidence(artifacts, report)
    except KitError as problem:  # HostIOError from the directory or the atomic writer, UsageError for a bad path
        _finish(ctx, report.status, None)
        if failure is not None:
            # The run's own failure is what the operator must act on first; the evidence problem goes with it.
            failure.message = f"{failure.message}; its evidence was not written either: {problem}"
            return report, failure
        problem.message = (
            f"the run {report.status} in the database (run {ctx.run_id}, recorded in kit_runs) but its evidence was "
            f"not written: {problem}"
        )
        return report, problem
    report = dataclasses.replace(report, evidence=results.Evidence(str(directory), digest))
    _finish(ctx, report.status, digest)
    return report, failure


def _run_steps(
    ctx: RunContext,
    kit: VerifiedKit,
    plan: Plan,
    report: results.ApplyReport,
    argv: list[str],
    on_step: Any,
) -> tuple[results.ApplyReport, KitError | None]:
    """Every step of the plan, with the lock held; the report says how far it got, with the failure if any."""
    store, database = ctx.state, ctx.db
    book = checks.CheckBook()
    steps: list[results.StepResult] = []
    before: dict[str, int | None] = {}
    status: Any = "failed"
    failure: KitError | None = None
    try:
        store.ensure_tables()
        manifest = kit.report.manifest
        store.start_run(ctx.run_id, argv, manifest.kit.name, manifest.kit.sequence, ctx.kit_sha256)
        faults.point("run-started")
        checks.measure_before(database, plan.checks_for_phase(None), book)
        before.update(book.before)
        current_phase: str | None = None
        for step in plan.steps:
            faults.point("step-start")
            signals.checkpoint()
            if step.phase != current_phase:
                if current_phase is not None:
                    checks.run_checks(database, plan.checks_for_phase(current_phase), book)
                # A check bound to a phase counts "before" at the start of that phase.
                phase_checks = plan.checks_for_phase(step.phase)
                checks.measure_before(database, phase_checks, book)
                before.update({c.id: book.before.get(c.id) for c in phase_checks if c.kind == "count"})
            current_phase = step.phase
            if on_step is not None:
                on_step(step)
            result: results.StepResult
            if step.kind == "migration":
                result = migrations.apply_migration(ctx, step)
            elif step.kind == "seed":
                result = migrations.apply_seed(ctx, step)
            else:
                result = backfill.BackfillJob(ctx, step).run()
            steps.append(result)
            if result.status != "skipped":
                book.changed = True
        if current_phase is not None and current_phase != LAST_PHASE:
            checks.run_checks(database, plan.checks_for_phase(current_phase), book)
        checks.run_checks(database, plan.checks_for_phase(None), book)
        signals.checkpoint()  # the last safe point: a signal before here ends the run interrupted
        status = "succeeded"
    except InterruptedRun as exc:
        status, failure = "interrupted", exc
    except KitError as exc:
        status, failure = "failed", exc
    report = dataclasses.replace(
        report,
        status=status,
        steps=tuple(steps),
        checks_before=before,
        checks_after=tuple(book.results),
        error=results.RunError(failure.kind, failure.exit_code, str(failure)) if failure is not None else None,
    )
    return report, failure


def _finish(ctx: RunContext, status: str, digest: str | None) -> None:
    """Record the run's end and release the lock: best effort, the database may be what failed.

    A lock left behind is not lost: PostgreSQL drops it with the session, and a
    SQLite lease whose process is gone is taken over by the next run.
    """
    with contextlib.suppress(DatabaseError):
        ctx.state.finish_run(ctx.run_id, status, digest)
    with contextlib.suppress(DatabaseError):
        ctx.lock.release()


def rollback_kit(
    path: Path, db_url: str, verify_options: VerifyOptions, *, to_phase: str, lock_timeout: float, dry_run: bool = False
) -> dict[str, Any]:
    """Revert every applied step whose phase comes after ``to_phase``, newest first."""
    run_id = uuid.uuid4().hex
    with (
        signals.handling(),
        verified_kit(path, verify_options) as kit,
        _connected(db_url, read_only=dry_run, lock_timeout=lock_timeout) as database,
    ):
        phases = kit.plan.phases
        if to_phase != "none" and to_phase not in phases:
            raise UsageError(f"--to-phase {to_phase}: not a phase of this kit (phases: {', '.join(phases)}, or none)")
        ctx = _context(database, kit, ApplyOptions(lock_timeout=lock_timeout), run_id, None)
        if dry_run:
            plan = _rollback_plan(ctx.state, kit, to_phase)
            if plan is None:
                return {
                    "runId": run_id,
                    "dryRun": True,
                    "toPhase": to_phase,
                    "wouldRevert": [],
                    "note": "nothing applied",
                }
            return {"runId": run_id, "dryRun": True, "wouldRevert": [_brief(s) for s in plan]}
        if not ctx.state.exists():
            return {"runId": run_id, "dryRun": False, "toPhase": to_phase, "reverted": [], "note": "nothing applied"}
        validate_reverts(_rollback_plan(ctx.state, kit, to_phase) or [], dialect=database.dialect)
        ctx.lock.acquire()
        try:
            plan = _rollback_plan(ctx.state, kit, to_phase) or []
            reverted = []
            for step in plan:
                faults.point("revert-step")
                reverted.append(migrations.revert_step(ctx, step))
        finally:
            with contextlib.suppress(DatabaseError):
                ctx.lock.release()
        return {"runId": run_id, "toPhase": to_phase, "reverted": reverted}


def _brief(step: Step) -> dict[str, Any]:
    return {"id": step.id, "kind": step.kind, "phase": step.phase}


def _rollback_plan(store: StateStore, kit: VerifiedKit, to_phase: str) -> list[Step] | None:
    """Steps to revert, newest first; None when the database has no kit state at all."""
    if not store.exists():
        return None
    limit = phase_key(to_phase) if to_phase != "none" else None
    applied = store.migrations()
    backfills: dict[str, str] = {}
    for job in store.jobs():
        # A job run with --tenant has one state per tenant (`ID[tenant=T]`); any of them not reverted counts.
        job_id = job.job.split("[tenant=", 1)[0]
        if backfills.get(job_id) in (None, "reverted"):
            backfills[job_id] = job.status
    candidates: list[tuple[int, Step]] = []
    for step in kit.plan.steps:
        if limit is not None and phase_key(step.phase) <= limit:
            continue
        record = applied.get(step.id)
        if step.kind == "backfill" and backfills.get(step.id) not in (None, "reverted"):
            candidates.append((record.installed_rank if record is not None else 10**9, step))
        elif step.kind != "backfill" and record is not None and record.status in ("succeeded", "failed"):
            candidates.append((record.installed_rank, step))
    # Backfills run after their phase's migrations, so they are undone first within a phase.
    position = {step.id: number for number, step in enumerate(kit.plan.steps)}
    candidates.sort(
        key=lambda item: (phase_key(item[1].phase), item[1].kind == "backfill", item[0], position[item[1].id]),
        reverse=True,
    )
    return [step for _, step in candidates]


def status(db_url: str) -> dict[str, Any]:
    """What is applied, running or paused; backfill progress with rate, remaining rows and ETA; the lock."""
    with signals.handling(), _connected(db_url, read_only=True) as database:
        store = StateStore(database)
        described = {"dialect": database.dialect, "version": database.version(), "url": database.url}
        if not store.exists():
            return {"database": described, "migrations": [], "backfills": [], "runs": [], "lock": None}
        backfills = []
        for job in store.jobs():
            rate = store.job_rate(job.job) if job.status != "reverted" else None
            remaining = job.remaining if job.status not in ("finished", "reverted") else job.remaining or 0
            eta = None
            if remaining is not None and rate and job.status not in ("finished", "reverted"):
                eta = round(remaining / rate, 1)
            backfills.append(
                {
                    "job": job.job,
                    "status": job.status,
                    "pauseReason": job.pause_reason,
                    "cursor": job.cursor,
                    "rowsProcessed": job.rows_processed,
                    "rowsFailed": job.rows_failed,
                    "batches": job.batches,
                    "updatedAt": job.updated_at,
                    "remaining": remaining,
                    "rowsPerSecond": round(rate, 1) if rate is not None else None,
                    "etaSeconds": eta,
                }
            )
        lease = store.lease_holder()
        return {
            "database": described,
            "migrations": [record.to_json() for record in store.migrations().values()],
            "backfills": backfills,
            "runs": [run.to_json() for run in store.recent_runs()],
            "lock": lease.to_json() if lease is not None else None,
        }


def repair(
    path: Path | None,
    db_url: str,
    verify_options: VerifyOptions | None,
    *,
    accept_checksum: str | None = None,
    resolve: str | None = None,
    resolve_as: str | None = None,
    reset_cursor: str | None = None,
    release_lock: bool = False,
    reason: str,
    lock_timeout: float = 30.0,
) -> dict[str, Any]:
    """Record an operator decision the state tables cannot make alone (each one recorded in kit_events)."""
    if not reason.strip():
        raise UsageError("--reason is required: it is recorded in kit_events")
    chosen = [bool(accept_checksum), bool(resolve), bool(reset_cursor), release_lock]
    if sum(chosen) != 1:
        raise UsageError(
            "give one of --accept-checksum ID, --resolve ID --as succeeded|failed, --reset-cursor JOB, --release-lock"
        )
    run_id = uuid.uuid4().hex
    if release_lock:
        with signals.handling(), _connected(db_url) as database:
            return _release_lock(database, run_id, reason)
    if reset_cursor:
        with signals.handling(), _connected(db_url, lock_timeout=lock_timeout) as database:
            return _locked_repair(database, run_id, lock_timeout, reset_cursor, reason, None, None)
    if path is None or verify_options is None:
        raise UsageError("--accept-checksum and --resolve need the KIT the step comes from")
    with (
        signals.handling(),
        verified_kit(path, verify_options) as kit,
        _connected(db_url, lock_timeout=lock_timeout) as database,
    ):
        steps = {s.id: s for s in kit.plan.steps}
        target = str(accept_checksum or resolve)
        if target not in steps:
            raise UsageError(f"{target}: no such migration, seed or backfill in this kit")
        if resolve and resolve_as not in ("succeeded", "failed"):
            raise UsageError("--resolve needs --as succeeded or --as failed")
        step = steps[target]
        return _locked_repair(
            database, run_id, lock_timeout, target, reason, step.checksum if accept_checksum else None, resolve_as
        )


def _locked_repair(
    database: dbmod.Database,
    run_id: str,
    lock_timeout: float,
    target: str,
    reason: str,
    checksum: str | None,
    resolve_as: str | None,
) -> dict[str, Any]:
    store = StateStore(database)
    lock = ApplyLock(database, run_id, timeout=lock_timeout)
    lock.acquire()
    try:
        store.ensure_tables()
        with database.transaction():
            if checksum is not None:
                if not store.accept_checksum(target, checksum):
                    raise DatabaseError(f"{target}: nothing recorded for it in this database; nothing to accept")
                detail = f"accepted checksum {checksum}: {reason}"
            elif resolve_as is not None:
                if not store.resolve_running(target, resolve_as):
                    raise DatabaseError(f"{target}: not in running state; nothing to resolve")
                detail = f"resolved interrupted run as {resolve_as}: {reason}"
            else:
                if not store.reset_cursor(target):
                    raise DatabaseError(f"{target}: no backfill of that name recorded in this database")
                detail = f"cursor reset (the job restarts from its first matching row): {reason}"
            store.record_event(run_id, "repair", target, detail)
    finally:
        with contextlib.suppress(DatabaseError):
            lock.release()
    return {"runId": run_id, "id": target, "detail": detail}


def _release_lock(database: dbmod.Database, run_id: str, reason: str) -> dict[str, Any]:
    store = StateStore(database)
    if database.dialect == "postgresql":
        session = store.advisory_holder()
        raise UsageError(
            "PostgreSQL's apply lock is a session advisory lock: the server releases it when the session ends"
            + (f"; it is held by {session} (end that session if its run is gone)" if session else "; nobody holds it")
        )
    store.ensure_tables()
    with database.transaction():
        holder = store.lease_holder()
        if holder is None:
            raise DatabaseError(f"{database.url}: no apply lock is recorded; nothing to release")
        if live_kit_process(holder.host, holder.pid):
            # Releasing it would let a second apply run beside this one until it next renews its lease.
            raise LockBusyError(
                f"the apply lock on {database.url} is held by run {holder.run_id}, pid {holder.pid} on this host, "
                f"which is still running; nothing was released: let it finish, or stop it (kill -TERM {holder.pid}) "
                "and it releases the lock itself"
            )
        store.force_release_lease()
        detail = (
            f"released the apply lock of run {holder.run_id} (pid {holder.pid} on {holder.host}, lease until "
            f"{holder.expires_at}): {reason}"
        )
        store.record_event(run_id, "repair", "kit_lock", detail)
    return {"runId": run_id, "id": "kit_lock", "detail": detail}

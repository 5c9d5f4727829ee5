"""kit apply / rollback / status / repair: a verified kit's steps against a database.

The kit is verified and extracted in one pass into a private staging
directory; only those verified bytes are read afterwards, so a kit swapped on
disk after verification is never applied.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitbuilder.apply import backfill, checks, migrations, results, state
from kitbuilder.apply import db as dbmod
from kitbuilder.apply.context import ApplyOptions, RowProgress, RunContext
from kitbuilder.apply.evidence import check_artifacts_dir, write_evidence
from kitbuilder.apply.lock import ApplyLock, pid_alive
from kitbuilder.apply.plan import LAST_PHASE, Plan, Step, build_plan, phase_key, validate_plan, validate_reverts
from kitbuilder.core import jsonio
from kitbuilder.core.manifest import IMAGES_DIR
from kitbuilder.errors import DatabaseError, KitError, UsageError
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
def _connected(url: str, *, read_only: bool = False) -> Iterator[dbmod.Database]:
    database = dbmod.connect(url, read_only=read_only)
    try:
        yield database
    finally:
        with contextlib.suppress(Exception):
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
    status: Any = migrations.status_of(ctx, step) if ctx.db.table_exists("kit_migrations") else "pending"
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

    A real run always writes evidence (under ``artifacts``, default ./artifacts); a dry run only
    when ``artifacts`` is given, marked as a dry run. ``preflight`` (e.g. reaching the registry of
    ``--registry``) runs after the kit is verified and the plan validated, before the first statement.
    """
    evidence_dir = artifacts if artifacts is not None or options.dry_run else Path(DEFAULT_ARTIFACTS)
    run_id = uuid.uuid4().hex
    with verified_kit(path, verify_options) as kit, _connected(db_url, read_only=options.dry_run) as database:
        ctx = _context(database, kit, options, run_id, on_rows)
        manifest = kit.report.manifest
        # Everything the run depends on, before its first statement (a dry run checks the same).
        validate_plan(kit.plan, dialect=database.dialect, tenant=options.tenant)
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
            database={"dialect": database.dialect, "version": database.version(), "url": dbmod._redact(db_url)},
            status="running",
            tenant=options.tenant,
            deferred=deferred,
        )
        if options.dry_run:
            report = dataclasses.replace(report, plan=_dry_plan(ctx, plan), status="dry-run")
            if evidence_dir is None:
                return report
            directory, digest = write_evidence(evidence_dir, report)
            return dataclasses.replace(report, evidence=results.Evidence(str(directory), digest))
        state.ensure_tables(database)
        ctx.lock.acquire()
        report = dataclasses.replace(
            report,
            lock_wait_seconds=round(ctx.lock.waited, 3),
            plan=tuple(results.PlannedStep(s.id, s.kind, s.phase, s.checksum) for s in plan.steps),
        )
        book = checks.CheckBook()
        steps: list[results.StepResult] = []
        before: dict[str, int | None] = {}
        failure: KitError | None = None
        status: Any = "running"
        try:
            with database.transaction():
                # Whoever held the lock before us and left a run 'running' was killed.
                database.execute("UPDATE kit_runs SET status = 'interrupted' WHERE status = 'running'")
                database.execute(
                    "INSERT INTO kit_runs (run_id, started_at, argv, kit_name, kit_sequence, kit_sha256, status) "
                    "VALUES (:run, :at, :argv, :name, :seq, :sha, 'running')",
                    {
                        "run": run_id,
                        "at": state.utc_now(),
                        "argv": jsonio.dump_compact(argv).decode(),
                        "name": manifest.kit.name,
                        "seq": manifest.kit.sequence,
                        "sha": kit.report.kit_sha256,
                    },
                )
            checks.measure_before(database, plan.checks_for_phase(None), book)
            before.update(book.before)
            current_phase: str | None = None
            for step in plan.steps:
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
            status = "succeeded"
        except KitError as exc:
            failure = exc
            status = "failed"
        finally:
            report = dataclasses.replace(
                report,
                status=status if status != "running" else "failed",
                steps=tuple(steps),
                checks_before=before,
                checks_after=tuple(book.results),
                error=results.RunError(failure.kind, failure.exit_code, str(failure)) if failure else None,
            )
            assert evidence_dir is not None
            directory, digest = write_evidence(evidence_dir, report)
            report = dataclasses.replace(report, evidence=results.Evidence(str(directory), digest))
            with contextlib.suppress(Exception), database.transaction():
                database.execute(
                    "UPDATE kit_runs SET finished_at = :at, report_sha256 = :sha, status = :status WHERE run_id = :run",
                    {"at": state.utc_now(), "sha": digest, "status": report.status, "run": run_id},
                )
            with contextlib.suppress(Exception):
                ctx.lock.release()
        if failure is not None:
            failure.details = report.to_json()
            raise failure
        return report


def rollback_kit(
    path: Path, db_url: str, verify_options: VerifyOptions, *, to_phase: str, lock_timeout: float, dry_run: bool = False
) -> dict[str, Any]:
    """Revert every applied step whose phase comes after ``to_phase``, newest first."""
    run_id = uuid.uuid4().hex
    with verified_kit(path, verify_options) as kit, _connected(db_url, read_only=dry_run) as database:
        phases = kit.plan.phases
        if to_phase != "none" and to_phase not in phases:
            raise UsageError(f"--to-phase {to_phase}: not a phase of this kit (phases: {', '.join(phases)}, or none)")
        ctx = _context(database, kit, ApplyOptions(lock_timeout=lock_timeout), run_id, None)
        if not database.table_exists("kit_migrations"):
            return {
                "runId": run_id,
                "dryRun": dry_run,
                "toPhase": to_phase,
                ("wouldRevert" if dry_run else "reverted"): [],
                "note": "nothing applied",
            }
        limit = phase_key(to_phase) if to_phase != "none" else None
        applied = state.migration_rows(database)
        backfills: dict[str, str] = {}
        for job, job_status in database.query("SELECT job, status FROM kit_backfill_runs"):
            # A job run with --tenant has one state per tenant (`ID[tenant=T]`); any of them not reverted counts.
            job_id = str(job).split("[tenant=", 1)[0]
            if backfills.get(job_id) in (None, "reverted"):
                backfills[job_id] = job_status
        candidates: list[tuple[int, Step]] = []
        for step in kit.plan.steps:
            if limit is not None and phase_key(step.phase) <= limit:
                continue
            if step.kind == "backfill" and backfills.get(step.id) not in (None, "reverted"):
                rank = int(applied.get(step.id, {}).get("installed_rank") or 10**9)
                candidates.append((rank, step))
            elif step.kind != "backfill" and applied.get(step.id, {}).get("status") in ("succeeded", "failed"):
                candidates.append((int(applied[step.id]["installed_rank"]), step))
        # Backfills run after their phase's migrations, so they are undone first within a phase.
        position = {step.id: number for number, step in enumerate(kit.plan.steps)}
        candidates.sort(
            key=lambda item: (phase_key(item[1].phase), item[1].kind == "backfill", item[0], position[item[1].id]),
            reverse=True,
        )
        plan = [{"id": s.id, "kind": s.kind, "phase": s.phase} for _, s in candidates]
        if dry_run:
            return {"runId": run_id, "dryRun": True, "wouldRevert": plan}
        validate_reverts([step for _, step in candidates], dialect=database.dialect)
        ctx.lock.acquire()
        try:
            reverted = []
            for _, step in candidates:
                reverted.append(migrations.revert_step(ctx, step))
        finally:
            ctx.lock.release()
        return {"runId": run_id, "toPhase": to_phase, "reverted": reverted}


def _camel_keys(row: dict[str, Any]) -> dict[str, Any]:
    """A state-table row with JSON's camelCase keys (installed_rank → installedRank), like every other report."""
    return {re.sub(r"_([a-z])", lambda m: m.group(1).upper(), key): value for key, value in row.items()}


def status(db_url: str) -> dict[str, Any]:
    with _connected(db_url, read_only=True) as database:
        described = {"dialect": database.dialect, "version": database.version(), "url": dbmod._redact(db_url)}
        if not database.table_exists("kit_migrations"):
            return {"database": described, "migrations": [], "backfills": [], "runs": [], "lock": None}
        rows = state.migration_rows(database)
        backfills = [
            dict(
                zip(
                    ["job", "status", "pauseReason", "cursor", "rowsProcessed", "rowsFailed", "batches", "updatedAt"],
                    row,
                    strict=True,
                )
            )
            for row in database.query(
                "SELECT job, status, pause_reason, cursor_value, rows_processed, rows_failed, batches, updated_at "
                "FROM kit_backfill_runs ORDER BY job"
            )
        ]
        runs = [
            dict(
                zip(["runId", "startedAt", "finishedAt", "kit", "sequence", "status", "reportSha256"], row, strict=True)
            )
            for row in database.query(
                "SELECT run_id, started_at, finished_at, kit_name, kit_sequence, status, report_sha256 "
                "FROM kit_runs ORDER BY started_at DESC LIMIT 10"
            )
        ]
        lock = None
        if database.dialect == "sqlite":
            held = database.query("SELECT holder, host, pid, expires_at FROM kit_lock")
            lock = dict(zip(["runId", "host", "pid", "expiresAt"], held[0], strict=True)) if held else None
            if lock is not None and isinstance(lock["expiresAt"], str):
                lock["expiresAt"] = lock["expiresAt"].replace("+00:00", "Z")
        for backfill in backfills:
            # Stored as JSON text; reported decoded, as apply reports it.
            if backfill["cursor"] is not None:
                backfill["cursor"] = json.loads(backfill["cursor"])
        return {
            "database": described,
            "migrations": [_camel_keys(row) for row in rows.values()],
            "backfills": backfills,
            "runs": runs,
            "lock": lock,
        }


def repair(
    path: Path,
    db_url: str,
    verify_options: VerifyOptions,
    *,
    accept_checksum: str | None,
    resolve: str | None,
    resolve_as: str | None,
    reason: str,
) -> dict[str, Any]:
    if not reason.strip():
        raise UsageError("--reason is required: it is recorded in kit_events")
    run_id = uuid.uuid4().hex
    with verified_kit(path, verify_options) as kit, _connected(db_url) as database:
        steps = {s.id: s for s in kit.plan.steps}
        target = accept_checksum or resolve
        if target is None:
            raise UsageError("give --accept-checksum ID or --resolve ID --as succeeded|failed")
        if target not in steps:
            raise UsageError(f"{target}: no such migration, seed or backfill in this kit")
        step = steps[target]
        state.ensure_tables(database)
        with database.transaction():
            if accept_checksum:
                changed = database.execute(
                    "UPDATE kit_migrations SET checksum = :c WHERE id = :id", {"c": step.checksum, "id": step.id}
                )
                changed += database.execute(
                    "UPDATE kit_backfill_runs SET checksum = :c WHERE job = :id OR substr(job, 1, :n) = :scoped",
                    {"c": step.checksum, "id": step.id, "n": len(step.id) + 8, "scoped": f"{step.id}[tenant="},
                )
                if not changed:
                    raise DatabaseError(f"{step.id}: nothing recorded for it in this database; nothing to accept")
                detail = f"accepted checksum {step.checksum}: {reason}"
            else:
                if resolve_as not in ("succeeded", "failed"):
                    raise UsageError("--as must be succeeded or failed")
                changed = database.execute(
                    "UPDATE kit_migrations SET status = :s WHERE id = :id AND status = 'running'",
                    {"s": resolve_as, "id": step.id},
                )
                if not changed:
                    raise DatabaseError(f"{step.id}: not in running state; nothing to resolve")
                detail = f"resolved interrupted run as {resolve_as}: {reason}"
            state.record_event(database, run_id, "repair", step.id, detail)
        return {"runId": run_id, "id": step.id, "detail": detail}

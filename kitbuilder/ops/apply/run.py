"""``kit apply``: a verified kit's migrations, seeds and backfills against a database, with evidence."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from kitbuilder import faults
from kitbuilder.apply import backfill, checks, migrations, results, signals
from kitbuilder.apply import db as dbmod
from kitbuilder.apply.context import ApplyOptions, RowProgress, RunContext
from kitbuilder.apply.evidence import check_artifacts_dir, write_evidence
from kitbuilder.apply.plan import LAST_PHASE, Plan, Step, validate_plan
from kitbuilder.errors import DatabaseError, FailedRunError, HostIOError, InterruptedRun, KitError
from kitbuilder.ops.apply.preflight import check_tenant_value, dry_plan
from kitbuilder.ops.apply.session import VerifiedKit, connected, describe, run_context, verified_kit
from kitbuilder.ops.verify import VerifyOptions

DEFAULT_ARTIFACTS = "artifacts"

StepHook = Callable[[Step], None]
RunStatus = Literal["succeeded", "failed", "interrupted"]


def apply_kit(
    path: Path,
    db_url: str,
    verify_options: VerifyOptions,
    options: ApplyOptions,
    *,
    argv: list[str],
    artifacts: Path | None = None,
    on_rows: RowProgress | None = None,
    on_step: StepHook | None = None,
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
        connected(db_url, read_only=options.dry_run, create=True, lock_timeout=options.lock_timeout) as database,
    ):
        ctx = run_context(database, kit, options, run_id, on_rows)
        _check_before_first_statement(ctx, kit, preflight, evidence_dir)
        plan = kit.plan.limited_to_tenant() if options.tenant is not None else kit.plan
        report = _report_of(ctx, path, kit, plan, argv)
        if options.dry_run:
            return _dry_run(ctx, plan, report, evidence_dir)
        assert evidence_dir is not None
        return _real_run(ctx, kit, plan, report, evidence_dir, on_step)


def _check_before_first_statement(
    ctx: RunContext, kit: VerifiedKit, preflight: Callable[[], None] | None, evidence_dir: Path | None
) -> None:
    database, options = ctx.db, ctx.options
    validate_plan(kit.plan, dialect=database.dialect, tenant=options.tenant)
    backfill.check_workers(options.workers, database.dialect)
    if options.tenant is not None:
        check_tenant_value(database, kit.plan, options.tenant)
    if preflight is not None:
        preflight()
    if evidence_dir is not None:
        check_artifacts_dir(evidence_dir)


def _report_of(ctx: RunContext, path: Path, kit: VerifiedKit, plan: Plan, argv: list[str]) -> results.ApplyReport:
    """The report as the run starts: what is applied, by whom, to which database."""
    tenant = ctx.options.tenant
    deferred = (
        results.Deferred(
            plan.deferred_steps,
            plan.deferred_checks,
            f"--tenant {tenant} leaves the phase of the first backfill unfinished for other tenants; "
            "its checks and later phases run in a full apply (without --tenant)",
        )
        if plan.deferred_steps or plan.deferred_checks
        else None
    )
    return results.ApplyReport(
        run_id=ctx.run_id,
        argv=tuple(argv),
        dry_run=ctx.options.dry_run,
        kit=results.AppliedKit(str(path), kit.report.kit_sha256, kit.report.manifest.kit),
        signers=tuple(kit.report.signers),
        verify_checks=tuple(kit.report.checks),
        database=describe(ctx.db),
        status="running",
        tenant=tenant,
        deferred=deferred,
    )


def _dry_run(
    ctx: RunContext, plan: Plan, report: results.ApplyReport, evidence_dir: Path | None
) -> results.ApplyReport:
    report = dataclasses.replace(report, plan=dry_plan(ctx, plan), status="dry-run")
    if evidence_dir is None:
        return report
    directory, digest = _write_evidence(evidence_dir, report)
    return dataclasses.replace(report, evidence=results.Evidence(str(directory), digest))


def _real_run(
    ctx: RunContext,
    kit: VerifiedKit,
    plan: Plan,
    report: results.ApplyReport,
    evidence_dir: Path,
    on_step: StepHook | None,
) -> results.ApplyReport:
    # The lock first, then the state tables: two first runs must not create them together.
    ctx.lock.acquire()
    report = dataclasses.replace(
        report,
        lock_wait_seconds=round(ctx.lock.waited, 3),
        plan=tuple(results.PlannedStep(s.id, s.kind, s.phase, s.checksum) for s in plan.steps),
    )
    report, failure = _run_steps(ctx, kit, plan, report, on_step)
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
    on_step: StepHook | None,
) -> tuple[results.ApplyReport, KitError | None]:
    """Every step of the plan, with the lock held; the report says how far it got, with the failure if any."""
    store, database = ctx.state, ctx.db
    book = checks.CheckBook()
    steps: list[results.StepResult] = []
    before: dict[str, int | None] = {}
    status: RunStatus = "failed"
    failure: KitError | None = None
    try:
        store.ensure_tables()
        manifest = kit.report.manifest
        store.start_run(ctx.run_id, report.argv, manifest.kit.name, manifest.kit.sequence, ctx.kit_sha256)
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
            steps.append(_run_step(ctx, step))
            if steps[-1].status != "skipped":
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


def _run_step(ctx: RunContext, step: Step) -> results.StepResult:
    if step.kind == "migration":
        return migrations.apply_migration(ctx, step)
    if step.kind == "seed":
        return migrations.apply_seed(ctx, step)
    return backfill.BackfillJob(ctx, step).run()


def _finish(ctx: RunContext, status: str, digest: str | None) -> None:
    """Record the run's end and release the lock: best effort, the database may be what failed.

    A lock left behind is not lost: PostgreSQL drops it with the session, and a
    SQLite lease whose process is gone is taken over by the next run.
    """
    with contextlib.suppress(DatabaseError):
        ctx.state.finish_run(ctx.run_id, status, digest)
    with contextlib.suppress(DatabaseError):
        ctx.lock.release()

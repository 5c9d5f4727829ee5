"""Text for ``kit apply``, ``rollback``, ``status`` and ``repair``, from their typed results.

The results are apply/results.py (the apply report) and apply/db_results.py (rollback, status, repair);
``--json`` prints their ``to_json``.
"""

from __future__ import annotations

import json

import click

from kitbuilder.apply.db_results import BackfillProgress, RepairResult, RollbackResult, StatusReport
from kitbuilder.apply.results import (
    ApplyReport,
    BackfillResult,
    DryBackfill,
    DryStep,
    MigrationResult,
    PlanEntry,
    SeedResult,
    StepResult,
)
from kitbuilder.cli.render import indent_sql
from kitbuilder.cli.render_images import push_text
from kitbuilder.core import text
from kitbuilder.ops.apply_and_push import AppliedRun

_COUNT_BASIS = {"exact": "", "current": " (as of now)", "upper-bound": " (upper bound)"}


def applied_text(run: AppliedRun) -> None:
    apply_text(run.report)
    if run.pushed is not None:
        push_text(run.pushed)


def apply_text(report: ApplyReport) -> None:
    kit, database = report.kit.info, report.database
    click.echo(
        f"{kit.name} {kit.version} (sequence {kit.sequence}) → {database.dialect} ({database.version})"
        + (f", tenant {report.tenant}" if report.tenant is not None else "")
    )
    if report.status == "dry-run":
        click.echo("dry run: nothing was changed")
        for entry in report.plan:
            _plan_entry_text(entry)
    else:
        for step in report.steps:
            click.echo(f"  {step.kind:<9} {step.id:<28} {step.status:<9} {_step_detail(step)}")
        for check in report.checks_after:
            mark = "✓" if check.passed else ("!" if check.on_fail == "warn" else "✗")
            click.echo(f"  {mark} check {check.id}: observed {check.observed}, expected {check.expected}")
    if report.deferred is not None:
        click.echo(
            f"deferred to a full apply: {', '.join(report.deferred.steps + report.deferred.checks)} "
            f"({report.deferred.reason})"
        )
    if report.evidence is not None:
        evidence = report.evidence
        marker = " (dry run)" if report.dry_run else ""
        click.echo(f"evidence{marker} {evidence.directory}/report.json (sha256 {evidence.report_sha256})")


def _plan_entry_text(entry: PlanEntry) -> None:
    if isinstance(entry, DryBackfill):
        tenants = ", ".join(f"{t}: {n}" for t, n in entry.by_tenant.items())
        click.echo(
            f"  backfill  {entry.id:<28} {entry.status:<9} would update {entry.would_update} rows"
            f"{_COUNT_BASIS[entry.count_basis]}" + (f" ({tenants})" if tenants else "")
        )
        if entry.count_basis != "exact":
            click.echo(f"            {text.printable(entry.count_reason)}")
        click.echo(indent_sql(entry.sql))
    elif isinstance(entry, DryStep):
        click.echo(f"  {entry.kind:<9} {entry.id:<28} {entry.status}")
        if entry.kind == "migration" and entry.status != "applied":
            click.echo(indent_sql(entry.sql))
        elif entry.kind == "seed":
            click.echo(f"            into {entry.table}: {', '.join(entry.files)}")


def _step_detail(step: StepResult) -> str:
    if isinstance(step, BackfillResult) and step.status == "finished":
        return (
            f"{step.rows_this_run} rows this run ({step.rows_processed} total, {step.rows_failed} "
            f"quarantined), {step.rows_per_second or 0:,.0f} rows/s"
        )
    if isinstance(step, SeedResult) and step.status == "succeeded":
        return f"{step.rows} rows into {step.table}"
    if isinstance(step, MigrationResult) and step.status == "succeeded":
        return f"{step.duration_ms} ms, verify {step.verify}"
    return step.reason or ""


def rollback_text(result: RollbackResult) -> None:
    click.echo(("would revert" if result.dry_run else "reverted") + f" {len(result.steps)} step(s)")
    for step in result.steps:
        click.echo(f"  {step.kind:<9} {step.id:<28} {result.step_status}")


def status_text(result: StatusReport) -> None:
    for row in result.migrations:
        click.echo(f"  {row.kind:<9} {row.id:<28} {row.status:<10} phase {row.phase}  {row.finished_at or ''}")
    for job in result.backfills:
        click.echo(f"  backfill  {job.job:<28} {job.status:<10} {_backfill_progress(job)}")
        for part in job.ranges:
            click.echo(
                f"            range {part.number} ({json.dumps(part.lo)}, {json.dumps(part.hi)}]: "
                f"cursor {json.dumps(part.cursor)}, {part.rows_processed} rows, {part.rows_failed} quarantined, "
                f"{part.batches} batches"
            )
    lock = result.lock
    if lock is not None:
        click.echo(f"  lock held by run {lock.run_id} (pid {lock.pid} on {lock.host}, lease until {lock.expires_at})")
    if not result.migrations and not result.backfills:
        click.echo("nothing applied")


def _backfill_progress(job: BackfillProgress) -> str:
    """One status line's worth of a backfill: rows, quarantine, cursor, rate, remaining, ETA, why paused."""
    parts = [f"{job.rows_processed} rows", f"{job.rows_failed} quarantined"]
    # A split job keeps a cursor per range (listed below it), none of its own.
    parts.append(f"{len(job.ranges)} ranges" if job.ranges else f"cursor {json.dumps(job.cursor)}")
    if job.rows_per_second is not None:
        parts.append(f"{job.rows_per_second:,.0f} rows/s")
    if job.remaining is not None:
        parts.append(f"{job.remaining} remaining")
    if job.eta_seconds is not None:
        parts.append(f"ETA {job.eta_seconds:.0f}s")
    reason = f"  ({job.pause_reason})" if job.pause_reason else ""
    return ", ".join(parts) + reason


def repair_text(result: RepairResult) -> None:
    click.echo(f"{result.id}: {result.detail}")

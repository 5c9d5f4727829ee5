"""Text for ``kit apply``, ``rollback``, ``status`` and ``repair``.

The apply report is typed (apply/results.py). Rollback, status and repair results are still the documents
ops/apply.py builds (their schemas: rollback-, status-, repair-report); these renderers read them as such
until ops/apply.py returns models for them.
"""

from __future__ import annotations

import json
from typing import Any

import click

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
    kit, database = report.kit, report.database
    click.echo(
        f"{kit['name']} {kit['version']} (sequence {kit['sequence']}) → {database['dialect']} ({database['version']})"
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


def rollback_text(result: dict[str, Any], *, dry_run: bool) -> None:
    entries = result.get("wouldRevert", result.get("reverted", []))
    click.echo(("would revert" if dry_run else "reverted") + f" {len(entries)} step(s)")
    for entry in entries:
        click.echo(f"  {entry['kind']:<9} {entry['id']:<28} {entry.get('status', '')}")


def status_text(result: dict[str, Any]) -> None:
    for row in result["migrations"]:
        click.echo(
            f"  {row['kind']:<9} {row['id']:<28} {row['status']:<10} phase {row['phase']}  {row['finishedAt'] or ''}"
        )
    for row in result["backfills"]:
        click.echo(f"  backfill  {row['job']:<28} {row['status']:<10} {_backfill_progress(row)}")
    lock = result["lock"]
    if lock:
        click.echo(
            f"  lock held by run {lock['runId']} (pid {lock['pid']} on {lock['host']}, lease until {lock['expiresAt']})"
        )
    if not result["migrations"] and not result["backfills"]:
        click.echo("nothing applied")


def _backfill_progress(row: dict[str, Any]) -> str:
    """One status line's worth of a backfill: rows, quarantine, cursor, rate, remaining, ETA, why paused."""
    parts = [f"{row['rowsProcessed']} rows", f"{row['rowsFailed']} quarantined", f"cursor {json.dumps(row['cursor'])}"]
    if row["rowsPerSecond"] is not None:
        parts.append(f"{row['rowsPerSecond']:,.0f} rows/s")
    if row["remaining"] is not None:
        parts.append(f"{row['remaining']} remaining")
    if row["etaSeconds"] is not None:
        parts.append(f"ETA {row['etaSeconds']:.0f}s")
    reason = f"  ({row['pauseReason']})" if row["pauseReason"] else ""
    return ", ".join(parts) + reason


def repair_text(result: dict[str, Any]) -> None:
    click.echo(f"{result['id']}: {result['detail']}")


def db_json(result: dict[str, Any]) -> dict[str, Any]:
    """rollback/status/repair documents: ops/apply.py returns them without ``ok``."""
    return {"ok": True, **result}

"""Before a run's first statement: ``--tenant`` against the database's columns, and the dry run's plan."""

from __future__ import annotations

from kitbuilder.apply import backfill, migrations, results, sqlsplit
from kitbuilder.apply import db as dbmod
from kitbuilder.apply.context import RunContext
from kitbuilder.apply.plan import Plan, Step
from kitbuilder.errors import UsageError


def dry_plan(ctx: RunContext, plan: Plan) -> tuple[results.PlanEntry, ...]:
    """What each step would do, in order; a backfill's count knows which steps before it are still pending."""
    entries: list[results.PlanEntry] = []
    pending: list[str] = []
    for step in plan.steps:
        entry = _plan_entry(ctx, step, tuple(pending))
        entries.append(entry)
        if not isinstance(entry, results.PlannedStep) and entry.status not in ("applied", "finished"):
            pending.append(step.id)
    return tuple(entries)


def _plan_entry(ctx: RunContext, step: Step, pending_before: tuple[str, ...]) -> results.PlanEntry:
    if step.kind == "backfill":
        return backfill.dry_run(ctx, step, pending_before=pending_before)
    status = migrations.status_of(ctx, step) if ctx.state.exists() else "pending"
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


def check_tenant_value(database: dbmod.Database, plan: Plan, tenant: str) -> None:
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

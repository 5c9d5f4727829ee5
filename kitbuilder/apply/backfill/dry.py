"""kit apply --dry-run of a backfill: how many rows it would change, read-only."""

from __future__ import annotations

from typing import Any

from kitbuilder.apply.backfill.job import BackfillJob
from kitbuilder.apply.context import RunContext
from kitbuilder.apply.db import RowError, StatementError
from kitbuilder.apply.plan import Step
from kitbuilder.apply.results import DryBackfill


def dry_run(ctx: RunContext, step: Step, *, pending_before: tuple[str, ...] = ()) -> DryBackfill:
    """Read-only: rows the job would change, per tenant, and how far the count can be trusted.

    ``pending_before``: steps of this kit that run before the job and are not applied yet.
    """
    job = BackfillJob(ctx, step)
    db = ctx.db
    present = db.table_exists(job.table)
    by_tenant: dict[str, int] = {}
    basis: Any = "exact"
    reason = "the predicate counted on the database as the job will find it"
    if pending_before:
        basis = "current"
        reason = (
            f"counted on the database as it is now; {len(pending_before)} earlier step(s) of this kit are pending "
            f"({', '.join(pending_before[:3])}{', …' if len(pending_before) > 3 else ''}) and may change it"
        )
    if not present:
        basis = "current"
        reason = f"{job.table} does not exist yet: 0 rows now; the steps of this kit before the job decide how many"
    else:
        try:
            by_tenant = job.remaining_by_tenant()
        except (RowError, StatementError) as exc:
            # The predicate names a table or column an earlier step of this kit adds, so it cannot be
            # evaluated yet: every row (of the tenant) may need work, which bounds the count from above.
            tenant = f" WHERE {step.backfill.tenant_column} = :tenant" if ctx.options.tenant is not None else ""
            total = db.query_value(f"SELECT COUNT(*) FROM {job.table}{tenant}", job.sql.params())
            by_tenant = {ctx.options.tenant or "*": int(total or 0)}
            basis = "upper-bound"
            reason = (
                f"the predicate cannot run before the kit's earlier steps ({exc.reason}); "
                f"counted every row of {job.table} instead"
            )
    recorded = None
    if db.table_exists("kit_backfill_runs"):
        record = ctx.state.job(job.state_key)
        recorded = record.status if record is not None else None
    return DryBackfill(
        id=step.id,
        phase=step.phase,
        checksum=step.checksum,
        table=job.table,
        table_present=present,
        predicate=step.backfill.predicate,
        would_update=sum(by_tenant.values()),
        by_tenant=by_tenant,
        batch_size=job.batch_size,
        count_basis=basis,
        count_reason=reason,
        status=str(recorded) if recorded not in (None, "reverted") else "pending",
        sql=job.statement_text(),
        tenant=ctx.options.tenant,
    )

"""Migrations and seeds: each applied once, in its own transaction with its state row.

A transactional migration's script, its verify queries and its
``kit_migrations`` row commit together, so a crash leaves either nothing or
the finished migration. A non-transactional one (``CREATE INDEX
CONCURRENTLY``) is marked ``running`` first; a later run resolves that state
with its verify script or, when declared idempotent, by running it again.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

from kitbuilder import faults
from kitbuilder.apply import sqlsplit, state
from kitbuilder.apply.context import RunContext
from kitbuilder.apply.db import DriverError
from kitbuilder.apply.plan import Step, seed_rows
from kitbuilder.apply.results import MigrationResult, SeedResult
from kitbuilder.errors import DatabaseError, UsageError

SEED_CHUNK = 5000


def _drift_message(step: Step, recorded: str) -> str:
    return (
        f"{step.kind} {step.id}: already applied with checksum {recorded[:16]}…, this kit has {step.checksum[:16]}…; "
        f"the shipped scripts changed after deployment. If that is intended, run "
        f'`kit repair KIT --db URL --accept-checksum {step.id} --reason "…"`'
    )


def status_of(ctx: RunContext, step: Step) -> Literal["applied", "pending", "interrupted"]:
    """'applied', 'pending', 'interrupted' or raises DatabaseError on checksum drift."""
    row = ctx.state.migrations().get(step.id)
    if row is None or row.status in ("failed", "reverted", "pending"):
        return "pending"
    if row.checksum != step.checksum:
        raise DatabaseError(_drift_message(step, row.checksum))
    return "applied" if row.status == "succeeded" else "interrupted"


def _verify(ctx: RunContext, step: Step) -> str | None:
    """None when every verify query returns a true first value; else the failing query."""
    script = step.text("verify")
    if not script:
        return None
    for statement in ctx.db.split(script):
        value = ctx.db.query_value(statement)
        if not value or value in ("0", "f", "false"):
            return statement.splitlines()[0][:120]
    return None


def _write_row(
    ctx: RunContext, step: Step, status: str, *, started: str, duration_ms: int | None, error: str | None
) -> None:
    ctx.state.write_migration(
        step_id=step.id,
        phase=step.phase,
        kind=step.kind,
        checksum=step.checksum,
        status=status,
        run_id=ctx.run_id,
        started=started,
        duration_ms=duration_ms,
        error=error,
        kit_name=ctx.kit.name,
        kit_version=ctx.kit.version,
        kit_sequence=ctx.kit.sequence,
        kit_sha256=ctx.kit_sha256,
    )


def _fail(ctx: RunContext, step: Step, started: str, message: str) -> DatabaseError:
    """Record the failure (best effort: the database may be what failed) and return the error to raise."""
    try:
        with ctx.db.transaction():
            _write_row(ctx, step, "failed", started=started, duration_ms=None, error=message)
            ctx.state.record_event(ctx.run_id, "fail", step.id, message)
    except DatabaseError:
        pass  # the original failure is what the user needs to see
    return DatabaseError(f"{step.kind} {step.id} failed: {message}")


class _StepFailure(Exception):
    """A statement or verify query of the step failed; the message names which."""


def _run_statements(ctx: RunContext, step: Step, script: str) -> None:
    where = step.migration.files[step.migration.up].path
    for number, statement in enumerate(sqlsplit.split_script(script, ctx.db.dialect, where=where), start=1):
        faults.point("migration-statement")
        try:
            ctx.db.execute(statement.text)
        except DriverError as exc:
            first = statement.text.strip().splitlines()[0][:80]
            raise _StepFailure(f"statement {number} at {where}:{statement.line} ({first}): {exc.reason}") from exc


def apply_migration(ctx: RunContext, step: Step) -> MigrationResult:
    status = status_of(ctx, step)
    report = MigrationResult(step.id, step.phase, step.checksum, "skipped", reason="already applied")
    if status == "applied":
        return report
    transactional = step.migration.options.transactional
    started = state.utc_now()
    clock = time.monotonic()
    up = step.text("up") or ""
    if status == "interrupted":
        if _verify(ctx, step) is None and step.text("verify"):
            with ctx.db.transaction():
                _write_row(ctx, step, "succeeded", started=started, duration_ms=0, error=None)
                ctx.state.record_event(ctx.run_id, "repair", step.id, "interrupted run resolved by verify")
            return dataclasses.replace(
                report, status="succeeded", reason=None, resolved_by="verify", duration_ms=0, verify="passed"
            )
        if not step.migration.options.idempotent:
            raise DatabaseError(
                f"migration {step.id} was interrupted mid-run and is not idempotent; inspect the database, then "
                f'`kit repair KIT --db URL --resolve {step.id} --as succeeded|failed --reason "…"`'
            )
    try:
        if transactional:
            with ctx.db.transaction():
                _run_statements(ctx, step, up)
                failing = _verify(ctx, step)
                if failing is not None:
                    raise _StepFailure(f"verify query returned false: {failing}")
                duration = int((time.monotonic() - clock) * 1000)
                _write_row(ctx, step, "succeeded", started=started, duration_ms=duration, error=None)
                ctx.state.record_event(ctx.run_id, "deploy", step.id, f"{duration} ms")
                ctx.state.record_event(ctx.run_id, "verify", step.id, "passed")
                faults.point("migration-commit")
        else:
            with ctx.db.transaction():
                _write_row(ctx, step, "running", started=started, duration_ms=None, error=None)
            _run_statements(ctx, step, up)
            failing = _verify(ctx, step)
            if failing is not None:
                raise _StepFailure(f"verify query returned false: {failing}")
            duration = int((time.monotonic() - clock) * 1000)
            with ctx.db.transaction():
                _write_row(ctx, step, "succeeded", started=started, duration_ms=duration, error=None)
                ctx.state.record_event(ctx.run_id, "deploy", step.id, f"{duration} ms (non-transactional)")
    except _StepFailure as exc:
        raise _fail(ctx, step, started, str(exc)) from exc
    except DriverError as exc:
        raise _fail(ctx, step, started, exc.reason) from exc
    ctx.lock.renew()
    return dataclasses.replace(
        report,
        status="succeeded",
        reason=None,
        duration_ms=duration,
        verify="passed" if step.text("verify") else "none",
    )


def revert_step(ctx: RunContext, step: Step) -> None:
    script = (
        step.text("revert") if step.kind == "migration" else (step.backfill.revert if step.kind == "backfill" else None)
    )
    if step.kind == "seed":
        # Seeds are upserts: their rows stay (or go with the table a migration revert drops); marking the
        # seed reverted makes the next apply load it again, which is idempotent.
        script = script or ""
    elif not script:
        raise DatabaseError(f"{step.kind} {step.id}: no revert script in the kit; restore from backup instead")
    try:
        if step.kind == "migration" and not step.migration.options.transactional:
            # Like its up script, the revert (DROP INDEX CONCURRENTLY) cannot run in a transaction. The state
            # row changes after it: a run stopped in between reverts again, so such a revert must be idempotent.
            for statement in ctx.db.split(script):
                ctx.db.execute(statement)
                faults.point("revert-statement")
            with ctx.db.transaction():
                ctx.state.mark_reverted(step.id)
                ctx.state.record_event(ctx.run_id, "revert", step.id, "non-transactional")
        else:
            with ctx.db.transaction():
                for statement in ctx.db.split(script):
                    ctx.db.execute(statement)
                    faults.point("revert-statement")
                if step.kind == "backfill":
                    ctx.state.revert_job(step.id)
                else:
                    ctx.state.mark_reverted(step.id)
                ctx.state.record_event(ctx.run_id, "revert", step.id, None)
    except DriverError as exc:
        raise DatabaseError(f"revert of {step.kind} {step.id} failed: {exc.reason}") from exc


def apply_seed(ctx: RunContext, step: Step) -> SeedResult:
    report = SeedResult(step.id, step.phase, step.checksum, "skipped", reason="already applied")
    if status_of(ctx, step) == "applied":
        return report
    table: str = step.seed.options.table
    keys: list[str] = list(step.seed.options.key)
    started = state.utc_now()
    clock = time.monotonic()
    total = 0
    try:
        with ctx.db.transaction():
            for name in sorted(step.files):
                total += _upsert_file(ctx, table, keys, step.files[name])
            duration = int((time.monotonic() - clock) * 1000)
            _write_row(ctx, step, "succeeded", started=started, duration_ms=duration, error=None)
            ctx.state.record_event(ctx.run_id, "seed", step.id, f"{total} rows into {table}")
            faults.point("seed-commit")
    except DriverError as exc:
        raise _fail(ctx, step, started, f"loading into {table}: {exc.reason}") from exc
    ctx.lock.renew()
    return dataclasses.replace(report, status="succeeded", reason=None, rows=total, table=table, duration_ms=duration)


def _upsert_file(ctx: RunContext, table: str, keys: list[str], path: Path) -> int:
    rows = list(seed_rows(path))
    if not rows:
        return 0
    columns = sorted({column for row in rows for column in row})
    missing = [k for k in keys if k not in columns]
    if missing:
        raise UsageError(f"{path.name}: seed rows lack key column(s) {', '.join(missing)}")
    updates = [c for c in columns if c not in keys]
    conflict = (
        f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in updates)
        if updates
        else f"ON CONFLICT ({', '.join(keys)}) DO NOTHING"
    )
    values = [[row.get(c) for c in columns] for row in rows]
    if ctx.db.dialect == "postgresql":
        staging = "kit_seed_staging"
        ctx.db.execute(f"CREATE TEMP TABLE {staging} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
        ctx.db.copy_into(staging, columns, values)
        ctx.db.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {staging} {conflict}"
        )
        ctx.db.execute(f"DROP TABLE {staging}")
    else:
        placeholders = ", ".join(f":{c}" for c in columns)
        statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders}) {conflict}"
        for start in range(0, len(rows), SEED_CHUNK):
            faults.point("seed-chunk")
            for row in rows[start : start + SEED_CHUNK]:
                ctx.db.execute(statement, {c: row.get(c) for c in columns})
    return len(rows)

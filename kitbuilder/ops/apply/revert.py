"""``kit rollback``: revert the applied steps of the phases after ``--to-phase``, newest first."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

from kitbuilder import faults
from kitbuilder.apply import migrations, signals
from kitbuilder.apply.context import ApplyOptions
from kitbuilder.apply.db_results import RollbackResult, StepRef
from kitbuilder.apply.plan import Step, phase_key, validate_reverts
from kitbuilder.apply.state import StateStore
from kitbuilder.errors import DatabaseError, UsageError
from kitbuilder.ops.apply.session import VerifiedKit, connected, run_context, verified_kit
from kitbuilder.ops.verify import VerifyOptions


def rollback_kit(
    path: Path, db_url: str, verify_options: VerifyOptions, *, to_phase: str, lock_timeout: float, dry_run: bool = False
) -> RollbackResult:
    """Revert every applied step whose phase comes after ``to_phase``, newest first."""
    run_id = uuid.uuid4().hex
    with (
        signals.handling(),
        verified_kit(path, verify_options) as kit,
        connected(db_url, read_only=dry_run, lock_timeout=lock_timeout) as database,
    ):
        phases = kit.plan.phases
        if to_phase != "none" and to_phase not in phases:
            raise UsageError(f"--to-phase {to_phase}: not a phase of this kit (phases: {', '.join(phases)}, or none)")
        ctx = run_context(database, kit, ApplyOptions(lock_timeout=lock_timeout), run_id, None)
        nothing = RollbackResult(run_id, to_phase, dry_run, nothing_applied=True)
        if dry_run:
            plan = _rollback_plan(ctx.state, kit, to_phase)
            if plan is None:
                return nothing
            return RollbackResult(run_id, to_phase, True, tuple(_ref(step) for step in plan))
        if not ctx.state.exists():
            return nothing
        validate_reverts(_rollback_plan(ctx.state, kit, to_phase) or [], dialect=database.dialect)
        ctx.lock.acquire()
        try:
            reverted: list[StepRef] = []
            for step in _rollback_plan(ctx.state, kit, to_phase) or []:
                faults.point("revert-step")
                migrations.revert_step(ctx, step)
                reverted.append(_ref(step))
        finally:
            with contextlib.suppress(DatabaseError):
                ctx.lock.release()
        return RollbackResult(run_id, to_phase, False, tuple(reverted))


def _ref(step: Step) -> StepRef:
    return StepRef(step.id, step.kind, step.phase)


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

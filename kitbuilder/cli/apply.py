"""Database commands: ``kit apply`` (then, with --registry, the image push), ``rollback``, ``status``, ``repair``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kitbuilder.cli.app import main
from kitbuilder.cli.errors import exit_on_error
from kitbuilder.cli.options import (
    FiniteRange,
    RegistryArgs,
    TrustArgs,
    db_option,
    json_option,
    lock_option,
    quiet_option,
    registry_options,
    trust_options,
)
from kitbuilder.cli.render import emit_json
from kitbuilder.progress import byte_progress, progress_enabled, row_progress

if TYPE_CHECKING:
    from kitbuilder.apply.plan import Step


@main.command()
@click.argument("kit", type=click.Path(path_type=Path))
@trust_options
@db_option
@click.option("--dry-run", is_flag=True, help="Show the plan, SQL and backfill counts; change nothing.")
@click.option(
    "--batch-size", type=click.IntRange(min=1), help="Rows per backfill batch (default: the job's, else 500)."
)
@click.option("--tenant", help="Limit backfills to this tenant.")
@click.option("--stop-on-error", is_flag=True, help="Stop a backfill at its first failing row.")
@click.option("--error-rate", type=FiniteRange(0, 1), help="Pause a backfill above this failed-row rate (0.01).")
@click.option("--min-sample", type=click.IntRange(min=1), help="Rows seen before the error rate counts (100).")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Backfill workers in parallel, each on its own key range and connection (PostgreSQL).",
)
@lock_option
@click.option(
    "--artifacts",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the run's evidence directory is written [default: artifacts]; with --dry-run, only when given.",
)
@click.option("--registry", help="Also push the kit's images to this registry (HOST[:PORT]) after applying.")
@registry_options
@quiet_option
@json_option
def apply(
    kit: Path,
    trust: TrustArgs,
    db_url: str,
    dry_run: bool,
    batch_size: int | None,
    tenant: str | None,
    stop_on_error: bool,
    error_rate: float | None,
    min_sample: int | None,
    workers: int,
    lock_timeout: float,
    artifacts: Path | None,
    registry: str | None,
    registry_args: RegistryArgs,
    quiet: bool,
    as_json: bool,
) -> None:
    """Verify KIT, then apply its migrations, seeds and backfills to --db, writing evidence."""
    # Operations and their renderers load with the command that needs them: `kit --version` stays light.
    from kitbuilder.apply.context import ApplyOptions
    from kitbuilder.cli.render_apply import applied_text
    from kitbuilder.ops import apply_and_push

    with exit_on_error(as_json):
        verify_options = trust.inputs().verify_options()
        options = ApplyOptions(
            dry_run=dry_run,
            batch_size=batch_size,
            tenant=tenant,
            stop_on_error=stop_on_error,
            error_rate_threshold=error_rate,
            min_sample=min_sample,
            lock_timeout=lock_timeout,
            workers=workers,
        )
        target = None
        if registry is not None and not dry_run:
            target = apply_and_push.PushTarget(registry, registry_args.access())
        show = progress_enabled(quiet or as_json)
        progress = apply_and_push.Progress(
            rows=lambda: row_progress(enabled=show),
            push_bytes=lambda label: byte_progress(label, None, enabled=show),
            on_step=_show_step if show else None,
        )
        run = apply_and_push.apply_then_push(
            kit, db_url, verify_options, options, argv=sys.argv, artifacts=artifacts, target=target, progress=progress
        )
    if as_json:
        emit_json(run.to_json())
    else:
        applied_text(run)


def _show_step(step: Step) -> None:
    click.echo(f"→ {step.kind} {step.id} (phase {step.phase})", err=True)


@main.command()
@click.argument("kit", type=click.Path(path_type=Path))
@trust_options
@db_option
@click.option("--to-phase", required=True, help="Keep this phase and earlier; revert later ones ('none' = all).")
@click.option("--dry-run", is_flag=True)
@lock_option
@json_option
def rollback(
    kit: Path,
    trust: TrustArgs,
    db_url: str,
    to_phase: str,
    dry_run: bool,
    lock_timeout: float,
    as_json: bool,
) -> None:
    """Run revert scripts, newest first, for every phase after --to-phase."""
    from kitbuilder.cli.render_apply import rollback_text
    from kitbuilder.ops import apply as apply_op

    with exit_on_error(as_json):
        result = apply_op.rollback_kit(
            kit,
            db_url,
            trust.inputs().verify_options(),
            to_phase=to_phase,
            lock_timeout=lock_timeout,
            dry_run=dry_run,
        )
    if as_json:
        emit_json(result.to_json())
    else:
        rollback_text(result)


@main.command()
@db_option
@json_option
def status(db_url: str, as_json: bool) -> None:
    """What is applied, running or paused in --db, with backfill progress."""
    from kitbuilder.cli.render_apply import status_text
    from kitbuilder.ops import apply as apply_op

    with exit_on_error(as_json):
        result = apply_op.status(db_url)
    if as_json:
        emit_json(result.to_json())
    else:
        status_text(result)


@main.command()
@click.argument("kit", type=click.Path(path_type=Path), required=False)
@trust_options
@db_option
@click.option("--accept-checksum", help="Accept this step's changed checksum (recorded; needs KIT).")
@click.option("--resolve", help="Resolve an interrupted non-transactional migration (needs KIT).")
@click.option("--as", "resolve_as", type=click.Choice(["succeeded", "failed"]))
@click.option("--reset-cursor", help="Restart this backfill's cursor from its first matching row.")
@click.option("--release-lock", is_flag=True, help="Remove a SQLite apply lease left by a run that is gone.")
@click.option("--reason", required=True, help="Why; recorded in kit_events.")
@lock_option
@json_option
def repair(
    kit: Path | None,
    trust: TrustArgs,
    db_url: str,
    accept_checksum: str | None,
    resolve: str | None,
    resolve_as: str | None,
    reset_cursor: str | None,
    release_lock: bool,
    reason: str,
    lock_timeout: float,
    as_json: bool,
) -> None:
    """Record an operator decision the state tables cannot make alone."""
    from kitbuilder.cli.render_apply import repair_text
    from kitbuilder.ops import apply as apply_op

    with exit_on_error(as_json):
        result = apply_op.repair(
            kit,
            db_url,
            trust.inputs().verify_options() if kit is not None else None,
            accept_checksum=accept_checksum,
            resolve=resolve,
            resolve_as=resolve_as,
            reset_cursor=reset_cursor,
            release_lock=release_lock,
            reason=reason,
            lock_timeout=lock_timeout,
        )
    if as_json:
        emit_json(result.to_json())
    else:
        repair_text(result)

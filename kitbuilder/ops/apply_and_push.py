"""``kit apply [--registry]``: apply a kit to a database, then (optionally) push its images to a registry.

The composition is an operation of its own: the registry is checked once the kit is verified and before the
database changes (a registry problem found only after the apply would leave the run half done), and the images
go last, so a push failure (exit 11) leaves the applied database as it is and carries the run's report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitbuilder.apply.context import ApplyOptions
from kitbuilder.apply.plan import Step
from kitbuilder.apply.results import ApplyReport
from kitbuilder.errors import FailedRunError, KitError
from kitbuilder.ops import apply as apply_op
from kitbuilder.ops.images import PushResult
from kitbuilder.ops.pushing import RegistryAccess, check_registry, push
from kitbuilder.ops.verify import VerifyOptions
from kitbuilder.progress import ByteBar, RowBars


@dataclass(frozen=True)
class PushTarget:
    """Where to push the kit's images after the apply."""

    registry: str
    access: RegistryAccess


@dataclass(frozen=True)
class AppliedRun:
    """An apply run's report, and the image push that followed it (``--registry``), if any."""

    report: ApplyReport
    pushed: PushResult | None = None

    def to_json(self) -> dict[str, Any]:
        return {"ok": True, **self.report.to_json()}


def _no_rows() -> AbstractContextManager[RowBars | None]:
    return nullcontext(None)


def _no_bytes(label: str) -> AbstractContextManager[ByteBar | None]:
    return nullcontext(None)


@dataclass(frozen=True)
class Progress:
    """What a terminal shows while the run goes on: backfill row bars, then the push's byte bar, one at a time.

    Factories, not open bars: the row bars close before the push's bar opens (one live display at a time).
    """

    rows: Callable[[], AbstractContextManager[RowBars | None]] = _no_rows
    push_bytes: Callable[[str], AbstractContextManager[ByteBar | None]] = _no_bytes
    on_step: Callable[[Step], None] | None = None


def apply_then_push(
    kit: Path,
    db_url: str,
    verify_options: VerifyOptions,
    options: ApplyOptions,
    *,
    argv: list[str],
    artifacts: Path | None = None,
    target: PushTarget | None = None,
    progress: Progress = Progress(),
) -> AppliedRun:
    """Apply ``kit`` to ``db_url``; with ``target`` (and not a dry run), push its images afterwards.

    Raises what ops.apply.apply_kit raises; a push failure after a successful apply is raised as a
    FailedRunError carrying the apply report (the database part succeeded: its report is not lost).
    """
    push_after = target is not None and not options.dry_run

    def preflight() -> None:
        assert target is not None
        check_registry(target.registry, target.access)

    with progress.rows() as bars:
        report = apply_op.apply_kit(
            kit,
            db_url,
            verify_options,
            options,
            argv=argv,
            artifacts=artifacts,
            on_rows=bars.update if bars else None,
            preflight=preflight if push_after else None,
            on_step=progress.on_step,
        )
    if not push_after:
        return AppliedRun(report)
    assert target is not None
    try:
        with progress.push_bytes(f"push {target.registry}") as bar:
            pushed = push(
                kit,
                target.registry,
                verify_options,
                target.access,
                on_bytes=bar.advance if bar else None,
                on_start=bar.set_total if bar else None,
            )
    except KitError as error:
        raise FailedRunError(error, report=report.to_json()) from error
    return AppliedRun(dataclasses.replace(report, images=pushed.to_json()), pushed)

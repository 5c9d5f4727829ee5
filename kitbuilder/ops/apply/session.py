"""What every database command opens: the verified kit (staged privately) and the database connection.

The kit is verified and extracted in one pass into a private staging directory; only those verified
bytes are read afterwards, so a kit swapped on disk after verification is never applied.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kitbuilder.apply import db as dbmod
from kitbuilder.apply import signals
from kitbuilder.apply.context import ApplyOptions, RowProgress, RunContext
from kitbuilder.apply.lock import ApplyLock, pid_alive
from kitbuilder.apply.plan import Plan, build_plan
from kitbuilder.apply.results import DatabaseInfo
from kitbuilder.core.manifest import IMAGES_DIR
from kitbuilder.errors import UsageError
from kitbuilder.ops.verify import VerifyOptions, VerifyReport, verify_kit

STAGING_PREFIX = "kit-apply-"


@dataclass(frozen=True)
class VerifiedKit:
    report: VerifyReport
    staging: Path
    plan: Plan


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
def connected(
    url: str, *, read_only: bool = False, create: bool = False, lock_timeout: float = 30.0
) -> Iterator[dbmod.Database]:
    """The database for one command; a signal during its work stops at the next safe point (signals.deferred)."""
    database = dbmod.connect(url, read_only=read_only, create=create, lock_timeout=lock_timeout)
    try:
        with signals.deferred(database.interrupt):
            yield database
    finally:
        database.close()


def describe(database: dbmod.Database) -> DatabaseInfo:
    return DatabaseInfo(dialect=database.dialect, version=database.version(), url=database.url)


def run_context(
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

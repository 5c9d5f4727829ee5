"""What every apply step needs: the database, its state store, the run's identity, the lock, options, progress."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kitbuilder.apply.db import Database
from kitbuilder.apply.lock import ApplyLock
from kitbuilder.apply.state import StateStore
from kitbuilder.core.manifest import KitInfo

# (step id, rows done so far, rows expected in total or None)
RowProgress = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class ApplyOptions:
    dry_run: bool = False
    batch_size: int | None = None  # overrides each job's batch_size when given
    tenant: str | None = None
    stop_on_error: bool = False
    error_rate_threshold: float | None = None  # overrides the job's (default 1%)
    min_sample: int | None = None
    lock_timeout: float = 30.0
    workers: int = 1  # parallel backfill workers, each on its own key range and connection (PostgreSQL)


@dataclass(frozen=True)
class RunContext:
    db: Database
    run_id: str
    kit: KitInfo
    kit_sha256: str
    lock: ApplyLock
    options: ApplyOptions
    on_rows: RowProgress | None = None

    @property
    def state(self) -> StateStore:
        return StateStore(self.db)

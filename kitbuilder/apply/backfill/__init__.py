"""Batched, resumable backfills over key ranges (keyset pagination), optionally in parallel key ranges.

``job`` runs one job (state, checks, ranges, rescans), ``worker`` the batches
of one key range on one connection, ``pool`` the ranges of a split job on
several connections at once, ``sql`` builds every statement, ``dry`` counts
what a dry run would change.
"""

from kitbuilder.apply.backfill.dry import dry_run
from kitbuilder.apply.backfill.job import MAX_RESCANS, BackfillJob, check_workers

__all__ = ["MAX_RESCANS", "BackfillJob", "check_workers", "dry_run"]

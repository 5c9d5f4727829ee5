"""The one owner of the state tables kit apply keeps in the target database (every ``kit_*`` statement is here).

They are the source of truth for what is applied and how far each backfill
got; every change to them is committed in the same transaction as the work it
records, which is what makes a killed run resumable without double work. Like
alembic's HeadMaintainer owns its version table, the run loop, status, rollback
and repair ask this module and never write state SQL of their own, so all of
them read one truth.

Order matters for concurrency: on PostgreSQL the tables are created only once
the advisory lock is held (two first runs creating them together collide in
the catalog); on SQLite only ``kit_lock`` is created before the lease is taken
(SQLite serialises DDL itself), the rest after.

Rows read back are decoded into frozen values here; a row that cannot be
decoded (hand-edited, corrupted) is a DatabaseError naming the table, the row
and the ``kit repair`` command that fixes it, never a crash.
"""

from kitbuilder.apply.state.records import (
    ADVISORY_KEY,
    CHECKSUM_ALGORITHM,
    LOCK_NAME,
    MIGRATION_STATUSES,
    JobRecord,
    JobTotals,
    LeaseHolder,
    MigrationRecord,
    RangeRecord,
    RunRecord,
    Statement,
    decode_cursor,
    encode_key,
    encode_key_sql,
    installed_by,
    job_key,
    key_value,
    tenant_prefix,
    utc_now,
)
from kitbuilder.apply.state.store import StateStore
from kitbuilder.apply.state.tables import ddl

__all__ = [
    "ADVISORY_KEY",
    "CHECKSUM_ALGORITHM",
    "LOCK_NAME",
    "MIGRATION_STATUSES",
    "JobRecord",
    "JobTotals",
    "LeaseHolder",
    "MigrationRecord",
    "RangeRecord",
    "RunRecord",
    "StateStore",
    "Statement",
    "ddl",
    "decode_cursor",
    "encode_key",
    "encode_key_sql",
    "installed_by",
    "job_key",
    "key_value",
    "tenant_prefix",
    "utc_now",
]

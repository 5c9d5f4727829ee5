"""``kit repair``: record an operator decision the state tables cannot make alone (each one in kit_events)."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

from kitbuilder.apply import db as dbmod
from kitbuilder.apply import signals
from kitbuilder.apply.db_results import RepairResult
from kitbuilder.apply.lock import ApplyLock, live_kit_process
from kitbuilder.apply.state import StateStore
from kitbuilder.errors import DatabaseError, LockBusyError, UsageError
from kitbuilder.ops.apply.session import connected, verified_kit
from kitbuilder.ops.verify import VerifyOptions


def repair(
    path: Path | None,
    db_url: str,
    verify_options: VerifyOptions | None,
    *,
    accept_checksum: str | None = None,
    resolve: str | None = None,
    resolve_as: str | None = None,
    reset_cursor: str | None = None,
    release_lock: bool = False,
    reason: str,
    lock_timeout: float = 30.0,
) -> RepairResult:
    """Record an operator decision the state tables cannot make alone (each one recorded in kit_events)."""
    if not reason.strip():
        raise UsageError("--reason is required: it is recorded in kit_events")
    chosen = [bool(accept_checksum), bool(resolve), bool(reset_cursor), release_lock]
    if sum(chosen) != 1:
        raise UsageError(
            "give one of --accept-checksum ID, --resolve ID --as succeeded|failed, --reset-cursor JOB, --release-lock"
        )
    run_id = uuid.uuid4().hex
    if release_lock:
        with signals.handling(), connected(db_url) as database:
            return _release_lock(database, run_id, reason)
    if reset_cursor:
        with signals.handling(), connected(db_url, lock_timeout=lock_timeout) as database:
            return _locked_repair(database, run_id, lock_timeout, reset_cursor, reason, None, None)
    if path is None or verify_options is None:
        raise UsageError("--accept-checksum and --resolve need the KIT the step comes from")
    with (
        signals.handling(),
        verified_kit(path, verify_options) as kit,
        connected(db_url, lock_timeout=lock_timeout) as database,
    ):
        steps = {s.id: s for s in kit.plan.steps}
        target = str(accept_checksum or resolve)
        if target not in steps:
            raise UsageError(f"{target}: no such migration, seed or backfill in this kit")
        if resolve and resolve_as not in ("succeeded", "failed"):
            raise UsageError("--resolve needs --as succeeded or --as failed")
        step = steps[target]
        return _locked_repair(
            database, run_id, lock_timeout, target, reason, step.checksum if accept_checksum else None, resolve_as
        )


def _locked_repair(
    database: dbmod.Database,
    run_id: str,
    lock_timeout: float,
    target: str,
    reason: str,
    checksum: str | None,
    resolve_as: str | None,
) -> RepairResult:
    store = StateStore(database)
    lock = ApplyLock(database, run_id, timeout=lock_timeout)
    lock.acquire()
    try:
        store.ensure_tables()
        with database.transaction():
            if checksum is not None:
                if not store.accept_checksum(target, checksum):
                    raise DatabaseError(f"{target}: nothing recorded for it in this database; nothing to accept")
                detail = f"accepted checksum {checksum}: {reason}"
            elif resolve_as is not None:
                if not store.resolve_running(target, resolve_as):
                    raise DatabaseError(f"{target}: not in running state; nothing to resolve")
                detail = f"resolved interrupted run as {resolve_as}: {reason}"
            else:
                if not store.reset_cursor(target):
                    raise DatabaseError(f"{target}: no backfill of that name recorded in this database")
                detail = f"cursor reset (the job restarts from its first matching row): {reason}"
            store.record_event(run_id, "repair", target, detail)
    finally:
        with contextlib.suppress(DatabaseError):
            lock.release()
    return RepairResult(run_id, target, detail)


def _release_lock(database: dbmod.Database, run_id: str, reason: str) -> RepairResult:
    store = StateStore(database)
    if database.dialect == "postgresql":
        session = store.advisory_holder()
        raise UsageError(
            "PostgreSQL's apply lock is a session advisory lock: the server releases it when the session ends"
            + (f"; it is held by {session} (end that session if its run is gone)" if session else "; nobody holds it")
        )
    store.ensure_tables()
    with database.transaction():
        holder = store.lease_holder()
        if holder is None:
            raise DatabaseError(f"{database.url}: no apply lock is recorded; nothing to release")
        if live_kit_process(holder.host, holder.pid):
            # Releasing it would let a second apply run beside this one until it next renews its lease.
            raise LockBusyError(
                f"the apply lock on {database.url} is held by run {holder.run_id}, pid {holder.pid} on this host, "
                f"which is still running; nothing was released: let it finish, or stop it (kill -TERM {holder.pid}) "
                "and it releases the lock itself"
            )
        store.force_release_lease()
        detail = (
            f"released the apply lock of run {holder.run_id} (pid {holder.pid} on {holder.host}, lease until "
            f"{holder.expires_at}): {reason}"
        )
        store.record_event(run_id, "repair", "kit_lock", detail)
    return RepairResult(run_id, "kit_lock", detail)

"""One `kit apply` per database at a time, and never a lock that outlives a killed run.

PostgreSQL: a session-level advisory lock, released by the server when the
session ends (a SIGKILLed run's connection drops, so its lock goes with it).
SQLite has no sessions: a lease row written in an exclusive transaction, with
an expiry renewed as work progresses. On this host the holder's pid decides: a
lease is taken over only when its process is gone, never because it expired
while the holder still runs (a long statement renews nothing). A lease left by a
run on another host blocks until its expiry, or until an operator who knows that
run is gone runs ``kit repair --db URL --release-lock --reason …``. A run that
finds its lease gone when renewing stops (exit 9) rather than run beside another.

The SQL lives in ``state.StateStore``; this module decides when to try, how
long to wait and what to say.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from kitbuilder import faults
from kitbuilder.apply.db import BusyError, Database
from kitbuilder.apply.state import StateStore
from kitbuilder.errors import LockBusyError


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError):
        return False
    return True


def live_kit_process(host: str, pid: int) -> bool:
    """Whether ``pid`` on ``host`` is a running kit (the holder of a lease may still be working).

    Only this host's processes can be seen. A pid that was reused by another program is not a kit
    run: its command line (Linux ``/proc``) names neither ``kit`` nor ``kitbuilder``. Where the command
    line cannot be read, a live pid counts as kit's (refusing is the safe side).
    """
    if host != socket.gethostname() or not pid_alive(pid):
        return False
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True
    return any(b"kitbuilder" in argument or os.path.basename(argument) == b"kit" for argument in arguments)


class ApplyLock:
    def __init__(
        self,
        db: Database,
        run_id: str,
        *,
        timeout: float,
        lease_seconds: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._db = db
        self._state = StateStore(db)
        self._run_id = run_id
        self._timeout = timeout
        self._lease = lease_seconds
        self._sleep = sleep
        self.waited = 0.0
        self._last_renewal = 0.0
        self._held = False
        self._busy_reason = ""

    def acquire(self) -> None:
        """Take the lock, polling until --lock-timeout; LockBusyError (exit 9) naming the holder otherwise."""
        start = time.monotonic()
        reported = False
        while True:
            if self._try_acquire():
                self.waited = time.monotonic() - start
                self._last_renewal = time.monotonic()
                self._held = True
                faults.point("lock-acquired")
                return
            if not reported:
                faults.point("lock-busy")
                reported = True
            if time.monotonic() - start >= self._timeout:
                raise LockBusyError(
                    f"another kit apply holds the lock on {self._describe()}; waited {self._timeout:g}s "
                    "(raise --lock-timeout, or check `kit status`)"
                )
            self._sleep(min(0.5, max(0.05, self._timeout / 20)))

    def _describe(self) -> str:
        if self._busy_reason:
            return f"{self._db.url} ({self._busy_reason})"
        if self._db.dialect == "postgresql":
            try:
                holder = self._state.advisory_holder()
            except BusyError:
                holder = None
            return f"the PostgreSQL database (advisory lock{', held by ' + holder if holder else ''})"
        try:
            lease = self._state.lease_holder()
        except BusyError:
            lease = None
        if lease is None:
            return "the SQLite database"
        gone = "that run is gone" if lease.host != socket.gethostname() else f"pid {lease.pid} is not a kit run"
        elsewhere = f'; if {gone}, `kit repair --db {self._db.url} --release-lock --reason "…"` releases it'
        return (
            f"the SQLite database (run {lease.run_id}, pid {lease.pid} on {lease.host}, lease until {lease.expires_at})"
            f"{elsewhere}"
        )

    def _try_acquire(self) -> bool:
        try:
            if self._db.dialect == "postgresql":
                return self._state.try_advisory_lock()
            self._state.ensure_lock_table()
            return self._state.try_take_lease(self._run_id, lease_seconds=self._lease, alive=pid_alive)
        except BusyError as exc:
            # SQLite: another connection holds a write transaction for longer than busy_timeout (set from
            # --lock-timeout): the lock is busy, not the database broken.
            self._busy_reason = f"another connection holds a write transaction: {exc.reason}"
            return False

    def renew(self) -> None:
        """Extend the SQLite lease; cheap to call often (renews at most every few seconds)."""
        if self._db.dialect != "sqlite" or time.monotonic() - self._last_renewal < self._lease / 4:
            return
        if not self._state.renew_lease(self._run_id, lease_seconds=self._lease):
            self._held = False
            raise LockBusyError(
                f"this run no longer holds the apply lock on {self._db.url} (released with `kit repair "
                "--release-lock`, or taken over): stopped at a safe point; check `kit status`, then rerun"
            )
        self._last_renewal = time.monotonic()

    def release(self) -> None:
        if not self._held:
            return
        if self._db.dialect == "postgresql":
            self._state.advisory_unlock()
        else:
            self._state.release_lease(self._run_id)
        self._held = False

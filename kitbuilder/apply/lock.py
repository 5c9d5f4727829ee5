"""One `kit apply` per database at a time, and never a lock that outlives a killed run.

PostgreSQL: a session-level advisory lock, released by the server when the
session ends (a SIGKILLed run's connection drops, so its lock goes with it).
SQLite has no sessions: a lease row written in an exclusive transaction, with
an expiry renewed as work progresses; a lease whose holder is a dead process on
this host, or whose expiry has passed, is taken over.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from kitbuilder.apply.db import Database
from kitbuilder.errors import LockBusyError

ADVISORY_KEY = 0x4B4954  # "KIT"
LOCK_NAME = "kit-apply"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
        self._run_id = run_id
        self._timeout = timeout
        self._lease = lease_seconds
        self._sleep = sleep
        self.waited = 0.0
        self._last_renewal = 0.0

    def acquire(self) -> None:
        start = time.monotonic()
        while True:
            if self._try_acquire():
                self.waited = time.monotonic() - start
                self._last_renewal = time.monotonic()
                return
            if time.monotonic() - start >= self._timeout:
                raise LockBusyError(
                    f"another kit apply holds the lock on {self._describe()}; waited {self._timeout:.0f}s "
                    "(raise --lock-timeout, or check `kit status`)"
                )
            self._sleep(min(0.5, max(0.05, self._timeout / 20)))

    def _describe(self) -> str:
        if self._db.dialect == "postgresql":
            return "the PostgreSQL database (advisory lock)"
        holder = self._db.query("SELECT holder, host, pid, expires_at FROM kit_lock WHERE name = :n", {"n": LOCK_NAME})
        if holder:
            run, host, pid, expires = holder[0]
            return f"the SQLite database (run {run}, pid {pid} on {host}, lease until {expires})"
        return "the SQLite database"

    def _try_acquire(self) -> bool:
        if self._db.dialect == "postgresql":
            return bool(self._db.query_value("SELECT pg_try_advisory_lock(:k)", {"k": ADVISORY_KEY}))
        now = datetime.now(UTC)
        with self._db.transaction():
            rows = self._db.query(
                "SELECT holder, host, pid, expires_at FROM kit_lock WHERE name = :n", {"n": LOCK_NAME}
            )
            if rows:
                holder, host, pid, expires_at = rows[0]
                stale = expires_at < now.isoformat() or (host == socket.gethostname() and not pid_alive(int(pid)))
                if holder != self._run_id and not stale:
                    return False
                self._db.execute("DELETE FROM kit_lock WHERE name = :n", {"n": LOCK_NAME})
            self._db.execute(
                "INSERT INTO kit_lock (name, holder, host, pid, expires_at) VALUES (:n, :h, :host, :pid, :exp)",
                {
                    "n": LOCK_NAME,
                    "h": self._run_id,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "exp": (now + timedelta(seconds=self._lease)).isoformat(),
                },
            )
        return True

    def renew(self) -> None:
        """Extend the SQLite lease; cheap to call often (renews at most every few seconds)."""
        if self._db.dialect != "sqlite" or time.monotonic() - self._last_renewal < self._lease / 4:
            return
        expires = (datetime.now(UTC) + timedelta(seconds=self._lease)).isoformat()
        with self._db.transaction():
            self._db.execute(
                "UPDATE kit_lock SET expires_at = :e WHERE name = :n AND holder = :h",
                {"e": expires, "n": LOCK_NAME, "h": self._run_id},
            )
        self._last_renewal = time.monotonic()

    def release(self) -> None:
        if self._db.dialect == "postgresql":
            self._db.query("SELECT pg_advisory_unlock(:k)", {"k": ADVISORY_KEY})
            return
        with self._db.transaction():
            self._db.execute(
                "DELETE FROM kit_lock WHERE name = :n AND holder = :h", {"n": LOCK_NAME, "h": self._run_id}
            )

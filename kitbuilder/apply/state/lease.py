"""The SQLite lease (``kit_lock``) and the PostgreSQL advisory lock: part of the one owner of kit state SQL."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from kitbuilder.apply.db import Database
from kitbuilder.apply.state.records import ADVISORY_KEY, LOCK_NAME, LeaseHolder, _int


class LeaseState:
    """The lock's rows and calls (mixed into StateStore)."""

    db: Database

    # The SQLite lease and the PostgreSQL advisory lock ---------------------------------------------------------

    def lease_holder(self) -> LeaseHolder | None:
        if self.db.dialect != "sqlite" or not self.db.table_exists("kit_lock"):
            return None
        rows = self.db.query("SELECT holder, host, pid, expires_at FROM kit_lock WHERE name = :n", {"n": LOCK_NAME})
        if not rows:
            return None
        holder, host, pid, expires = rows[0]
        return LeaseHolder(str(holder), str(host), _int("kit_lock", "the lease", "pid", pid), str(expires))

    def try_take_lease(self, run_id: str, *, lease_seconds: float, alive: Any) -> bool:
        """Take the SQLite lease if free, expired, or held by a dead process on this host; in one IMMEDIATE tx."""
        now = datetime.now(UTC)
        with self.db.transaction():
            holder = self.lease_holder()
            if holder is not None:
                # On this host the pid says exactly whether the holder lives, so a live run is never taken over
                # because its lease ran out (a long statement renews nothing); expiry is for other hosts' leases.
                if holder.host == socket.gethostname():
                    stale = not alive(holder.pid)
                else:
                    stale = holder.expires_at < now.isoformat()
                if holder.run_id != run_id and not stale:
                    return False
                self.db.execute("DELETE FROM kit_lock WHERE name = :n", {"n": LOCK_NAME})
            self.db.execute(
                "INSERT INTO kit_lock (name, holder, host, pid, expires_at) VALUES (:n, :h, :host, :pid, :exp)",
                {
                    "n": LOCK_NAME,
                    "h": run_id,
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "exp": (now + timedelta(seconds=lease_seconds)).isoformat(),
                },
            )
        return True

    def renew_lease(self, run_id: str, *, lease_seconds: float) -> bool:
        """Extend this run's lease; False when it no longer holds it (released by an operator, taken over)."""
        expires = (datetime.now(UTC) + timedelta(seconds=lease_seconds)).isoformat()
        with self.db.transaction():
            changed = self.db.execute(
                "UPDATE kit_lock SET expires_at = :e WHERE name = :n AND holder = :h",
                {"e": expires, "n": LOCK_NAME, "h": run_id},
            )
        return changed == 1

    def release_lease(self, run_id: str) -> None:
        with self.db.transaction():
            self.db.execute("DELETE FROM kit_lock WHERE name = :n AND holder = :h", {"n": LOCK_NAME, "h": run_id})

    def force_release_lease(self) -> LeaseHolder | None:
        """Remove whatever lease is recorded (kit repair --release-lock); returns what was removed."""
        holder = self.lease_holder()
        if holder is not None:
            self.db.execute("DELETE FROM kit_lock WHERE name = :n", {"n": LOCK_NAME})
        return holder

    def try_advisory_lock(self) -> bool:
        return bool(self.db.query_value("SELECT pg_try_advisory_lock(:k)", {"k": ADVISORY_KEY}))

    def advisory_unlock(self) -> None:
        self.db.query("SELECT pg_advisory_unlock(:k)", {"k": ADVISORY_KEY})

    def advisory_holder(self) -> str | None:
        """Who holds the PostgreSQL advisory lock: 'pid N (application, since T)'."""
        rows = self.db.query(
            "SELECT a.pid, a.application_name, a.backend_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = :k",
            {"k": ADVISORY_KEY},
        )
        if not rows:
            return None
        pid, application, since = rows[0]
        return f"server pid {pid} ({application or 'no application name'}, connected since {since})"

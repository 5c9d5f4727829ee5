"""The typed errors of the database boundary, and the one classifier of driver exceptions.

Every driver error is wrapped where it arises (in ``Database``, apply/db.py) into a
small tree: ``RowError`` (the database rejected a row's data: a constraint, a
conversion, a failing expression) or a ``SystemicError`` (disk full, I/O, a lost
connection, a lock, permissions, a bad statement, anything else). Only a
``RowError`` may be quarantined by a backfill; everything else stops the run with
exit 8 and leaves the open transaction rolled back. A driver error that arrives
after SIGINT/SIGTERM (the statement was interrupted) is the interrupt, never a row
error.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence

from kitbuilder.apply import signals
from kitbuilder.apply.credentials import scrub
from kitbuilder.errors import DatabaseError


class DriverError(DatabaseError):
    """A statement the database refused; ``reason`` is the driver's first line, ``sqlstate`` its code if any."""

    def __init__(self, message: str, *, reason: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.sqlstate = sqlstate


class RowError(DriverError):
    """The data of a row was rejected: a constraint, a conversion, a failing expression (SQLSTATE 22/23).

    The only error a backfill may quarantine: the same statement succeeds for other rows.
    """


class SystemicError(DriverError):
    """Anything that is not about one row: the run stops (exit 8), the open transaction rolls back."""


class ConnectionLostError(SystemicError):
    """The server went away or the connection broke."""


class StorageFullError(SystemicError):
    """Disk full or over quota, on the database's side."""


class StorageIOError(SystemicError):
    """An I/O error or corruption in the database files."""


class BusyError(SystemicError):
    """Another connection holds a lock the statement needs (SQLite busy/locked, PostgreSQL lock/deadlock)."""


class AccessError(SystemicError):
    """Permission denied, or a read-only database."""


class StatementError(SystemicError):
    """The statement itself is wrong for this database: syntax, a missing table or column, a type mismatch."""


# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_CLASSES: dict[int, type[DriverError]] = {
    3: AccessError,  # SQLITE_PERM
    5: BusyError,  # SQLITE_BUSY
    6: BusyError,  # SQLITE_LOCKED
    8: AccessError,  # SQLITE_READONLY
    10: StorageIOError,  # SQLITE_IOERR
    11: StorageIOError,  # SQLITE_CORRUPT
    13: StorageFullError,  # SQLITE_FULL
    14: StorageIOError,  # SQLITE_CANTOPEN
    18: RowError,  # SQLITE_TOOBIG: a value too large
    19: RowError,  # SQLITE_CONSTRAINT
    20: RowError,  # SQLITE_MISMATCH: datatype mismatch
    23: AccessError,  # SQLITE_AUTH
    25: RowError,  # SQLITE_RANGE
    26: StorageIOError,  # SQLITE_NOTADB
}
# SQLITE_ERROR (1) is both "no such column" and an expression failing on one row's value; these are the latter.
_SQLITE_ROW_MESSAGES = re.compile(
    r"user-defined function raised exception|malformed JSON|JSON cannot hold BLOB values|integer overflow"
    r"|JSON path error.*|bad JSON path.*|.*integer overflow",
    re.IGNORECASE,
)
_SQLITE_INTERRUPT = 9


def _classify_sqlite(exc: sqlite3.Error) -> type[DriverError]:
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, (sqlite3.IntegrityError, sqlite3.DataError)):
        return RowError
    if code is None:
        return SystemicError
    primary = int(code) & 0xFF
    if primary in _SQLITE_CLASSES:
        return _SQLITE_CLASSES[primary]
    if primary == 1:
        return RowError if _SQLITE_ROW_MESSAGES.fullmatch(first_line(exc)) else StatementError
    return SystemicError


def _classify_postgres(exc: Exception) -> type[DriverError]:
    import psycopg

    sqlstate = getattr(exc, "sqlstate", None) or ""
    if sqlstate[:2] in ("22", "23") or sqlstate == "P0001":  # data exception, constraint, RAISE in a trigger
        return RowError
    if sqlstate[:2] == "08" or sqlstate in ("57P01", "57P02", "57P03"):
        return ConnectionLostError
    if sqlstate == "53100":
        return StorageFullError
    if sqlstate[:2] == "58" or sqlstate[:2] == "XX":
        return StorageIOError
    if sqlstate in ("55P03", "40P01", "40001", "57014"):
        return BusyError
    if sqlstate in ("42501", "25006"):
        return AccessError
    if sqlstate[:2] == "42":
        return StatementError
    if not sqlstate and isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return ConnectionLostError  # no SQLSTATE: the client noticed the connection is gone
    return SystemicError


def first_line(exc: BaseException) -> str:
    """The first line of the driver's message, or the exception's type name when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def wrap_driver_error(exc: Exception, where: str, secrets: Sequence[str] = ()) -> DatabaseError:
    """The typed error for a driver exception; an interrupt is InterruptedRun (raised, not returned).

    ``secrets`` (the connection's password) are scrubbed from the driver's text, which may quote them.
    """
    pending = signals.received()
    code = getattr(exc, "sqlite_errorcode", None)
    if pending is not None:
        raise signals.interrupted_run(pending) from exc
    if isinstance(exc, sqlite3.Error):
        cls = _classify_sqlite(exc)
        if code is not None and int(code) & 0xFF == _SQLITE_INTERRUPT:
            # Interrupted without a signal of ours (another thread or a C library): not a row's fault.
            cls = SystemicError
        reason, sqlstate = first_line(exc), None
    else:
        cls = _classify_postgres(exc)
        reason, sqlstate = first_line(exc), getattr(exc, "sqlstate", None)
    reason = scrub(reason, secrets)
    if sqlstate == "55P03":
        # PostgreSQL's "canceling statement due to lock timeout" does not say whose limit it was.
        reason += " (another session held a lock it needs longer than --lock-timeout)"
    return cls(f"{where}: {reason}", reason=reason, sqlstate=sqlstate)

"""One small interface over SQLite (sqlite3) and PostgreSQL (psycopg 3): the one database boundary.

Statements are written once with ``:name`` parameters and portable SQL; this
module translates parameters for psycopg, splits scripts, and gives both
dialects explicit transactions (autocommit otherwise), so every state change is
committed exactly when the caller says.

Every driver error is wrapped where it arises, in ``Database`` itself, into the
tree of apply/dberrors.py (``RowError`` or a ``SystemicError``); that module and
apply/credentials.py (what is scrubbed from URLs, argv and driver messages) are
re-exported here, so callers import the boundary from one place.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from kitbuilder import faults
from kitbuilder.apply import signals, sqlsplit
from kitbuilder.apply.credentials import redact, redact_argv, scrub, url_secrets
from kitbuilder.apply.dberrors import (
    AccessError,
    BusyError,
    ConnectionLostError,
    DriverError,
    RowError,
    StatementError,
    StorageFullError,
    StorageIOError,
    SystemicError,
    first_line,
    wrap_driver_error,
)
from kitbuilder.errors import DatabaseError, UsageError

__all__ = [
    "AccessError",
    "BusyError",
    "ConnectionLostError",
    "Database",
    "DriverError",
    "Params",
    "PostgresDatabase",
    "RowError",
    "SqliteDatabase",
    "StatementError",
    "StorageFullError",
    "StorageIOError",
    "SystemicError",
    "connect",
    "redact",
    "redact_argv",
    "scrub",
    "to_pyformat",
    "url_secrets",
    "wrap_driver_error",
]

Params = dict[str, Any] | None
T = TypeVar("T")
_CONNINFO = re.compile(r"\s*[A-Za-z_]+\s*=.*", re.DOTALL)
_NAMED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|%|:([A-Za-z_][A-Za-z0-9_]*)")


# Databases -------------------------------------------------------------------------------------------------------


def to_pyformat(sql: str) -> str:
    """``:name`` → ``%(name)s`` outside quotes, ``::`` casts kept, every ``%`` escaped.

    psycopg scans the whole string for placeholders, quoted literals included,
    so a ``LIKE '%x%'`` must become ``LIKE '%%x%%'`` too.
    """

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if match.group(1):
            return f"%({match.group(1)})s"
        return token.replace("%", "%%")

    return _NAMED.sub(replace, sql)


class Database(ABC):
    dialect: str
    url: str  # redacted: safe to print and record
    _driver_errors: tuple[type[Exception], ...] = ()
    _secrets: tuple[str, ...] = ()

    def _call(self, action: Callable[[], T], what: str = "") -> T:
        """Run one driver call: a safe point for signals before it, driver errors typed after it."""
        signals.checkpoint()
        try:
            return action()
        except self._driver_errors as exc:
            raise wrap_driver_error(exc, f"{self.url}{what}", self._secrets) from exc

    @abstractmethod
    def version(self) -> str: ...

    @abstractmethod
    def split(self, script: str) -> list[str]: ...

    @abstractmethod
    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]: ...

    @abstractmethod
    def execute(self, sql: str, params: Params = None) -> int:
        """Run one statement; return the affected row count (-1 when unknown)."""

    @abstractmethod
    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def close(self) -> None: ...

    @abstractmethod
    def interrupt(self) -> None:
        """Ask the statement in flight to stop (called from a signal handler)."""

    def another(self) -> Database:
        """A second connection to the same database (a parallel backfill worker's); PostgreSQL only."""
        raise UsageError(f"{self.url}: one connection only ({self.dialect})")

    def query_value(self, sql: str, params: Params = None) -> Any:
        rows = self.query(sql, params)
        return rows[0][0] if rows and rows[0] else None

    def execute_batch(self, statements: Sequence[tuple[str, Params]]) -> None:
        """Run several statements whose results are not needed (PostgreSQL pipelines them: one round trip)."""
        for sql, params in statements:
            self.execute(sql, params)

    def run_script(self, script: str) -> None:
        for statement in self.split(script):
            self.execute(statement)

    @abstractmethod
    def table_exists(self, name: str) -> bool: ...

    @abstractmethod
    def columns(self, table: str) -> set[str]:
        """Column names of ``table`` (empty when it does not exist)."""

    @abstractmethod
    def copy_into(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Bulk insert ``rows`` into ``table`` (COPY on PostgreSQL)."""

    @property
    @abstractmethod
    def id_column(self) -> str:
        """DDL for an auto-increment integer primary key column named id."""


_BUSY_SLICE = 0.1  # seconds SQLite waits in C for a lock before kit's own loop checks for a signal


def _let_signal_handlers_run() -> int:
    """SQLite's progress callback: calling into Python runs pending signal handlers; 0 lets the statement go on."""
    return 0


def _sha256_hex(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode("utf-8")).hexdigest()


class SqliteDatabase(Database):
    dialect = "sqlite"
    _driver_errors = (sqlite3.Error,)

    def __init__(
        self, path: Path, *, read_only: bool = False, create: bool = False, busy_timeout: float = 30.0
    ) -> None:
        self.url = f"sqlite:///{path}"
        self.path = path
        if not path.exists():
            if not create:
                raise UsageError(f"--db {path}: no SQLite database there (only kit apply creates one); check the path")
            if not path.parent.is_dir():
                raise UsageError(
                    f"--db {path}: directory {path.parent} does not exist; create it first (kit never does)"
                )
        timeout = max(0.0, busy_timeout)
        try:
            if read_only and not path.exists():
                # A dry run must not create the file: a database that does not exist yet reads as empty.
                self._conn = sqlite3.connect("file:kit-empty?mode=memory", isolation_level=None, uri=True)
            else:
                # Read-write even for a dry run or status: a hot journal left by a killed run must be rolled
                # back before anything can read the file. Writing is then refused by query_only.
                mode = "rw" if read_only or path.exists() else "rwc"
                self._conn = sqlite3.connect(
                    f"file:{path}?mode={mode}", isolation_level=None, uri=True, timeout=timeout
                )
            self._conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if read_only:
                self._conn.execute("PRAGMA query_only = ON")
            self._conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchall()
        except sqlite3.Error as exc:
            typed = wrap_driver_error(exc, f"{path}: cannot open SQLite database")
            if isinstance(typed, AccessError):
                # Typically a hot journal left by a killed run: SQLite must roll it back before reading.
                raise AccessError(
                    f"{typed}; a killed run may have left a hot journal that needs rolling back: run kit as a user "
                    f"who can write {path} and its directory",
                    reason=typed.reason,
                ) from exc
            raise typed from exc
        except OSError as exc:
            raise DatabaseError(f"{path}: cannot open SQLite database ({exc.strerror or exc})") from exc
        # Portable helper for backfills that derive digests (canonical keys).
        self._conn.create_function("kit_sha256", 1, _sha256_hex, deterministic=True)
        self._depth = 0
        # SQLite runs a statement, and waits for another connection's lock, in C, where no Python signal handler
        # runs: Ctrl-C waited for the statement or the whole --lock-timeout. A progress callback lets the handler
        # run (it interrupts the statement), and outside a transaction the busy wait goes in short slices with a
        # safe point between them (retrying there is what SQLite prescribes).
        self._conn.set_progress_handler(_let_signal_handlers_run, 20_000)
        self._busy_wait = timeout
        self._busy_slice = min(timeout, _BUSY_SLICE)
        self._busy_now = timeout
        self._set_busy(self._busy_slice)

    def _set_busy(self, seconds: float) -> None:
        if seconds != self._busy_now:
            self._conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
            self._busy_now = seconds

    def _call(self, action: Callable[[], T], what: str = "") -> T:
        deadline = time.monotonic() + self._busy_wait
        while True:
            try:
                return super()._call(action, what)
            except BusyError:
                # Inside a transaction SQLite says roll back rather than retry: the caller's transaction does.
                if self._depth or time.monotonic() >= deadline:
                    raise
                faults.point("sqlite-busy")

    def version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def split(self, script: str) -> list[str]:
        return sqlsplit.split_sqlite(script)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            raise RuntimeError("nested transaction")
        self._call(lambda: self._conn.execute("BEGIN IMMEDIATE"), " (begin)")
        self._depth = 1
        try:
            self._set_busy(self._busy_wait)  # a statement inside may wait for readers (a cache spill), not retry
            yield
            self._set_busy(self._busy_slice)
            self._depth = 0  # a COMMIT refused as busy is retried, in slices (sqlite3_step's documentation)
            self._call(lambda: self._conn.execute("COMMIT"), " (commit)")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        finally:
            self._depth = 0
            with contextlib.suppress(sqlite3.Error):
                self._set_busy(self._busy_slice)

    def execute(self, sql: str, params: Params = None) -> int:
        return self._call(lambda: int(self._conn.execute(sql, params or {}).rowcount))

    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        return self._call(lambda: [tuple(row) for row in self._conn.execute(sql, params or {}).fetchall()])

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def interrupt(self) -> None:
        self._conn.interrupt()

    def table_exists(self, name: str) -> bool:
        # As SQLite resolves a name in a statement: any case, optionally schema-qualified, views too.
        schema, _, table = name.rpartition(".")
        sql = (
            "SELECT 1 FROM pragma_table_list WHERE name = :n COLLATE NOCASE AND type IN ('table', 'view', 'virtual') "
            "AND (:s = '' OR schema = :s COLLATE NOCASE)"
        )
        return bool(self.query(sql, {"n": table, "s": schema}))

    def columns(self, table: str) -> set[str]:
        return {str(row[0]) for row in self.query("SELECT name FROM pragma_table_info(:t)", {"t": table})}

    def copy_into(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        placeholders = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
        self._call(lambda: self._conn.executemany(sql, rows))

    @property
    def id_column(self) -> str:
        return "id INTEGER PRIMARY KEY AUTOINCREMENT"


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, *, read_only: bool = False, lock_timeout: float = 30.0) -> None:
        import psycopg

        self._secrets = url_secrets(url)
        self._conninfo = url  # kept only to open another connection; never printed (``url`` is the redacted form)
        self._read_only = read_only
        self._lock_timeout = lock_timeout
        self.url = scrub(redact(url), self._secrets)
        self._psycopg = psycopg
        self._driver_errors = (psycopg.Error,)
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            reason = scrub(first_line(exc), self._secrets)
            raise ConnectionLostError(f"{self.url}: cannot connect to PostgreSQL ({reason})", reason=reason) from exc
        if read_only:
            # The server enforces it: a dry run or status cannot change anything by mistake.
            self.execute("SET default_transaction_read_only = on")
        if lock_timeout > 0:
            # Every statement of the session (a migration's DDL, a backfill batch, a seed) waits at most
            # --lock-timeout for a lock another session holds, then fails with SQLSTATE 55P03 (BusyError): the
            # run stops with one line instead of hanging behind a long transaction, and queueing DDL behind
            # it never blocks the site's own queries for longer than that either.
            self.execute(f"SET lock_timeout = {max(1, round(lock_timeout * 1000))}")
        # kit_sha256() is created by StateStore.ensure_tables, with the apply lock held: created here, at
        # connect, two runs starting together collided in the catalog (pg_proc) before either held the lock.

    def version(self) -> str:
        return str(self.query_value("SELECT version()")).split(" on ")[0]

    def split(self, script: str) -> list[str]:
        return sqlsplit.split_postgres(script)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        block = self._conn.transaction()
        self._call(block.__enter__, " (begin)")
        try:
            yield
        except BaseException as exc:
            # The original error is what the caller needs; a failing rollback (connection gone) adds nothing.
            with contextlib.suppress(Exception):
                block.__exit__(type(exc), exc, exc.__traceback__)
            raise
        else:
            try:
                block.__exit__(None, None, None)
            except self._psycopg.Error as exc:
                raise wrap_driver_error(exc, f"{self.url} (commit)", self._secrets) from exc

    def _run(self, sql: str, params: Params, fetch: bool) -> Any:
        with self._conn.cursor() as cursor:
            if params is None:
                cursor.execute(sql.encode("utf-8"))
            else:
                cursor.execute(to_pyformat(sql), params)
            if fetch:
                return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
            return int(cursor.rowcount)

    def execute(self, sql: str, params: Params = None) -> int:
        return int(self._call(lambda: self._run(sql, params, False)))

    def execute_batch(self, statements: Sequence[tuple[str, Params]]) -> None:
        def run() -> None:
            with self._conn.pipeline(), self._conn.cursor() as cursor:
                for sql, params in statements:
                    cursor.execute(to_pyformat(sql), params)

        self._call(run)

    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._call(lambda: self._run(sql, params, True))
        return rows

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()

    def interrupt(self) -> None:
        self._conn.cancel()

    def another(self) -> Database:
        return PostgresDatabase(self._conninfo, read_only=self._read_only, lock_timeout=self._lock_timeout)

    def table_exists(self, name: str) -> bool:
        return bool(self.query("SELECT to_regclass(:n) IS NOT NULL", {"n": name})[0][0])

    def columns(self, table: str) -> set[str]:
        sql = (
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = :t AND table_schema = current_schema()"
        )
        return {str(row[0]) for row in self.query(sql, {"t": table})}

    def copy_into(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        def run() -> None:
            with self._conn.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

        self._call(run)

    @property
    def id_column(self) -> str:
        return "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"


def connect(url: str, *, read_only: bool = False, create: bool = True, lock_timeout: float = 30.0) -> Database:
    """Open ``url``: ``postgresql://…`` / ``postgres://…``, ``sqlite:///path`` or a plain file path.

    SQLite: ``create`` lets a missing file be created (never its directory); ``kit status``,
    ``rollback`` and ``repair`` pass ``create=False``, so a mistyped path is a usage error.
    ``read_only`` changes nothing (a missing file a dry run may create reads as empty).
    ``lock_timeout`` is how long a statement waits for another connection's lock.
    """
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url, read_only=read_only, lock_timeout=lock_timeout)
    if url.startswith("sqlite:///"):
        return SqliteDatabase(
            Path(url[len("sqlite:///") :]), read_only=read_only, create=create, busy_timeout=lock_timeout
        )
    if "://" in url:
        raise UsageError(f"--db {redact(url)}: expected postgresql://…, sqlite:///PATH or a file path")
    if _CONNINFO.fullmatch(url):
        # Not a file name: a libpq keyword/value string, which would otherwise become a new SQLite file named after
        # it (password included). Not echoed, for the same reason.
        raise UsageError(
            "--db: looks like a libpq key=value connection string; give a URL: postgresql://HOST/DB (or "
            "postgresql:///DB?service=NAME for a service file), or sqlite:///PATH for a file whose name has '='"
        )
    return SqliteDatabase(Path(url), read_only=read_only, create=create, busy_timeout=lock_timeout)

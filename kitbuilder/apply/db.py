"""One small interface over SQLite (sqlite3) and PostgreSQL (psycopg 3).

Statements are written once with ``:name`` parameters and portable SQL; this
module translates parameters for psycopg, splits scripts, and gives both
dialects explicit transactions (autocommit otherwise), so every state change is
committed exactly when the caller says.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from kitbuilder.apply import sqlsplit
from kitbuilder.errors import DatabaseError, UsageError

Params = dict[str, Any] | None
_NAMED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|%|:([A-Za-z_][A-Za-z0-9_]*)")


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
    url: str

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
    def copy_into(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Bulk insert ``rows`` into ``table`` (COPY on PostgreSQL)."""

    @property
    @abstractmethod
    def id_column(self) -> str:
        """DDL for an auto-increment integer primary key column named id."""


def _sha256_hex(value: str | None) -> str | None:
    return None if value is None else hashlib.sha256(value.encode("utf-8")).hexdigest()


class SqliteDatabase(Database):
    dialect = "sqlite"

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.url = f"sqlite:///{path}"
        self.path = path
        try:
            if read_only:
                # A dry run or `kit status` must not create the file; a missing one reads as empty.
                target = f"file:{path}?mode=ro" if path.exists() else "file:kit-empty?mode=memory"
                self._conn = sqlite3.connect(target, isolation_level=None, timeout=30, uri=True)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._conn = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._conn.execute("PRAGMA busy_timeout = 30000")
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseError(f"{path}: cannot open SQLite database ({exc})") from exc
        # Portable helper for backfills that derive digests (canonical keys).
        self._conn.create_function("kit_sha256", 1, _sha256_hex, deterministic=True)
        self._depth = 0

    def version(self) -> str:
        return f"SQLite {sqlite3.sqlite_version}"

    def split(self, script: str) -> list[str]:
        return sqlsplit.split_sqlite(script)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            raise RuntimeError("nested transaction")
        self._wrap(lambda: self._conn.execute("BEGIN IMMEDIATE"))
        self._depth = 1
        try:
            yield
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            raise
        else:
            self._wrap(lambda: self._conn.execute("COMMIT"))
        finally:
            self._depth = 0

    def _wrap(self, action: Any) -> Any:
        try:
            return action()
        except sqlite3.Error as exc:
            raise DatabaseError(f"{self.path}: {exc}") from exc

    def execute(self, sql: str, params: Params = None) -> int:
        cursor = self._conn.execute(sql, params or {})
        return int(cursor.rowcount)

    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._conn.execute(sql, params or {}).fetchall()]

    def close(self) -> None:
        self._conn.close()

    def table_exists(self, name: str) -> bool:
        return bool(self.query("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = :n", {"n": name}))

    def copy_into(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        placeholders = ", ".join("?" for _ in columns)
        self._conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", rows)

    @property
    def id_column(self) -> str:
        return "id INTEGER PRIMARY KEY AUTOINCREMENT"


class PostgresDatabase(Database):
    dialect = "postgresql"

    def __init__(self, url: str, *, read_only: bool = False) -> None:
        import psycopg

        self.url = url
        self._psycopg = psycopg
        try:
            self._conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise DatabaseError(f"{_redact(url)}: cannot connect to PostgreSQL ({_first_line(exc)})") from exc
        if read_only:
            # The server enforces it: a dry run or status cannot change anything by mistake.
            self.execute("SET default_transaction_read_only = on")
            return
        self.execute(
            "CREATE OR REPLACE FUNCTION kit_sha256(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT "
            "AS $$ SELECT encode(sha256(convert_to($1, 'UTF8')), 'hex') $$"
        )

    def version(self) -> str:
        return str(self.query_value("SELECT version()")).split(" on ")[0]

    def split(self, script: str) -> list[str]:
        return sqlsplit.split_postgres(script)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._conn.transaction():
            yield

    def execute(self, sql: str, params: Params = None) -> int:
        with self._conn.cursor() as cursor:
            if params is None:
                cursor.execute(sql.encode("utf-8"))
            else:
                cursor.execute(to_pyformat(sql), params)
            return int(cursor.rowcount)

    def execute_batch(self, statements: Sequence[tuple[str, Params]]) -> None:
        with self._conn.pipeline(), self._conn.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(to_pyformat(sql), params)

    def query(self, sql: str, params: Params = None) -> list[tuple[Any, ...]]:
        with self._conn.cursor() as cursor:
            if params is None:
                cursor.execute(sql.encode("utf-8"))
            else:
                cursor.execute(to_pyformat(sql), params)
            return [tuple(row) for row in cursor.fetchall()] if cursor.description else []

    def close(self) -> None:
        self._conn.close()

    def table_exists(self, name: str) -> bool:
        return bool(self.query("SELECT to_regclass(:n) IS NOT NULL", {"n": name})[0][0])

    def copy_into(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        with self._conn.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    @property
    def id_column(self) -> str:
        return "id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _redact(url: str) -> str:
    return re.sub(r"://([^:/@]+):[^@]*@", r"://\1:***@", url)


def connect(url: str, *, read_only: bool = False) -> Database:
    """Open ``url``: ``postgresql://…`` / ``postgres://…``, ``sqlite:///path`` or a plain file path.

    ``read_only`` never creates or changes anything (a missing SQLite file reads as an empty database).
    """
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url, read_only=read_only)
    if url.startswith("sqlite:///"):
        return SqliteDatabase(Path(url[len("sqlite:///") :]), read_only=read_only)
    if "://" in url:
        raise UsageError(f"--db {_redact(url)}: expected postgresql://…, sqlite:///PATH or a file path")
    return SqliteDatabase(Path(url), read_only=read_only)


def is_database_error(exc: BaseException) -> bool:
    """True for errors raised by either driver (used to turn them into DatabaseError with context)."""
    if isinstance(exc, sqlite3.Error):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, psycopg.Error)


def describe(exc: BaseException) -> str:
    return _first_line(exc)


def is_connection_lost(exc: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, psycopg.OperationalError)

"""The database boundary: driver errors typed where they arise (row vs systemic), credentials redacted."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kitbuilder.apply import db as dbmod
from kitbuilder.apply.db import BusyError, RowError, StatementError, SystemicError, connect, redact, redact_argv
from kitbuilder.errors import DatabaseError


@pytest.fixture
def sqlite_db(tmp_path: Path) -> dbmod.Database:
    database = connect(f"sqlite:///{tmp_path / 'x.db'}", lock_timeout=0.1)
    database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT CHECK (v <> 'bad'), j TEXT)")
    return database


def test_sqlite_row_errors_are_row_errors(sqlite_db: dbmod.Database) -> None:
    with pytest.raises(RowError):
        sqlite_db.execute("INSERT INTO t (id, v) VALUES (1, 'bad')")
    sqlite_db.execute("INSERT INTO t (id, v, j) VALUES (2, 'ok', '{')")
    with pytest.raises(RowError):  # a failing expression on one row's value
        sqlite_db.query("SELECT json_extract(j, '$.a') FROM t")
    with pytest.raises(RowError):
        sqlite_db.execute("INSERT INTO t (id, v) VALUES (2, 'dup')")


def test_sqlite_statement_and_lock_errors_are_systemic(sqlite_db: dbmod.Database, tmp_path: Path) -> None:
    with pytest.raises(StatementError) as caught:
        sqlite_db.query("SELECT nope FROM t")
    assert isinstance(caught.value, SystemicError) and isinstance(caught.value, DatabaseError)
    assert caught.value.exit_code == 8 and "\n" not in str(caught.value)
    holder = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BusyError):
            sqlite_db.execute("INSERT INTO t (id, v) VALUES (3, 'x')")
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_postgres_errors_are_typed_by_sqlstate(pg_dsn: str) -> None:
    database = connect(pg_dsn)
    try:
        database.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER)")
        database.execute("INSERT INTO t VALUES (1, 0)")
        with pytest.raises(RowError) as caught:
            database.query("SELECT 1 / n FROM t")
        assert caught.value.sqlstate == "22012"
        with pytest.raises(RowError):
            database.execute("INSERT INTO t VALUES (1, 1)")
        with pytest.raises(StatementError):
            database.query("SELECT nope FROM t")
    finally:
        database.close()


def test_credentials_are_redacted_in_urls_and_argv() -> None:
    assert redact("postgresql://app:s3cr3t@db:5432/site") == "postgresql://app:***@db:5432/site"
    assert redact("host=db password=s3cr3t user=app") == "host=db password=*** user=app"
    assert redact("sqlite:///tmp/site.db") == "sqlite:///tmp/site.db"
    argv = ["kit", "apply", "--db", "postgres://u:p%40ss@h/d", "--password-stdin", "--json", "--token=abc"]
    assert redact_argv(argv) == [
        "kit",
        "apply",
        "--db",
        "postgres://u:***@h/d",
        "--password-stdin",
        "--json",
        "--token=***",
    ]

"""SQL plumbing shared by both dialects; PostgreSQL splitting checked against a real server and psql -f."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from kitbuilder.apply.db import connect, to_pyformat
from kitbuilder.apply.plan import phase_key
from kitbuilder.apply.sqlsplit import postgres_statements, split_postgres, split_sqlite, sqlite_statements
from kitbuilder.errors import DatabaseError


def test_named_parameters_become_pyformat_outside_quotes() -> None:
    sql = "SELECT x::text, ':not' FROM t WHERE a = :lo AND b LIKE '%x' AND c = :hi"
    assert to_pyformat(sql) == "SELECT x::text, ':not' FROM t WHERE a = %(lo)s AND b LIKE '%%x' AND c = %(hi)s"


def test_percent_outside_quotes_is_escaped() -> None:
    assert to_pyformat("SELECT 5 % 2") == "SELECT 5 %% 2"


def test_postgres_split_respects_quotes_comments_and_dollar_quotes() -> None:
    script = "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\nSELECT ';'; -- a; b\n/* c; */SELECT 2"
    assert split_postgres(script) == [
        "CREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql",
        "SELECT ';'",
        "SELECT 2",
    ]


def test_sqlite_split_keeps_trigger_bodies_whole() -> None:
    script = (
        "CREATE TABLE a(x);\nCREATE TRIGGER t AFTER INSERT ON a BEGIN UPDATE a SET x = 1; END;\n-- only a comment;\n"
    )
    statements = split_sqlite(script)
    assert len(statements) == 2 and statements[1].endswith("END;")


def test_phases_sort_naturally() -> None:
    assert sorted(["21-102", "21-9", "21-101", "3"], key=phase_key) == ["3", "21-9", "21-101", "21-102"]


# PostgreSQL scripts that `psql -f` runs must split the way the server reads them -------------------------------

PG_CASES = {
    "dollar tag with digits": (
        "CREATE FUNCTION f1() RETURNS text LANGUAGE plpgsql AS $fn1$ BEGIN RETURN 'a;b'; END $fn1$;\n",
        "SELECT f1()",
    ),
    "nested comments": (
        "/* outer /* inner; */ still a comment; */ CREATE TABLE c1 (x int);\nINSERT INTO c1 VALUES (7);\n",
        "SELECT x::text FROM c1",
    ),
    "begin atomic body": (
        "CREATE FUNCTION f2() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  SELECT 1;\n  SELECT 2;\nEND;\n",
        "SELECT f2()::text",
    ),
    "escape string with a quote and a semicolon": (
        "CREATE TABLE e1 (t text);\nINSERT INTO e1 VALUES (E'it\\'s; here');\n",
        "SELECT t FROM e1",
    ),
}


@pytest.mark.parametrize("case", sorted(PG_CASES))
def test_postgres_scripts_run_as_psql_runs_them(case: str, pg_server: Any, tmp_path: Path) -> None:
    script, probe = PG_CASES[case]
    ours = str(pg_server.create_database(f"split_kit_{uuid.uuid4().hex[:12]}"))
    theirs = str(pg_server.create_database(f"split_psql_{uuid.uuid4().hex[:12]}"))
    database = connect(ours)
    try:
        with database.transaction():
            for statement in split_postgres(script):
                database.execute(statement)
        kit_result = database.query_value(probe)
    finally:
        database.close()
    (tmp_path / "script.sql").write_text(script)
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql not installed")
    subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", theirs, "-f", str(tmp_path / "script.sql")],
        check=True,
        capture_output=True,
    )
    reference = connect(theirs)
    try:
        assert kit_result == reference.query_value(probe)
    finally:
        reference.close()


def test_postgres_split_statement_lines_and_parse_errors() -> None:
    script = "-- header\nCREATE TABLE a (x int);\n\n/* c */ CREATE TABLE b (x int);\nCREATE TABEL c (x int);\n"
    with pytest.raises(DatabaseError, match=r"^m/up.sql:5: statement 3 does not parse as PostgreSQL"):
        postgres_statements(script, where="m/up.sql")
    assert [s.line for s in postgres_statements(script.rsplit("CREATE TABEL", 1)[0])] == [2, 4]


def test_sqlite_statements_keep_their_line() -> None:
    script = "CREATE TABLE a(x);\n\nCREATE TRIGGER t AFTER INSERT ON a BEGIN\n UPDATE a SET x = 1;\nEND;\n"
    assert [(s.line, s.text.split()[1]) for s in sqlite_statements(script)] == [(1, "TABLE"), (3, "TRIGGER")]

"""SQL plumbing shared by both dialects."""

from __future__ import annotations

from kitbuilder.apply.db import to_pyformat
from kitbuilder.apply.plan import phase_key
from kitbuilder.apply.sqlsplit import split_postgres, split_sqlite


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

"""Split SQL scripts into statements, so each runs inside kit's own transaction.

sqlite3's ``executescript`` commits first and PostgreSQL refuses
``CREATE INDEX CONCURRENTLY`` inside a multi-statement string, so scripts are
split here, each dialect by its own grammar:

- PostgreSQL: PostgreSQL's parser itself (pglast, built on libpg_query), so
  everything ``psql -f`` accepts splits the way the server reads it: dollar
  quotes with any tag (``$fn1$``), nested ``/* /* */ */`` comments,
  ``BEGIN ATOMIC ... END`` bodies, ``E'...\\'...'`` strings. A script that does
  not parse is refused before its first statement runs, naming the line.
- SQLite: ``sqlite3.complete_statement``, SQLite's own test of whether text ends
  a statement (it knows trigger bodies and SQLite's quoting). pglast only knows
  PostgreSQL's grammar, which differs from SQLite's (e.g. ``BEGIN ... END``
  trigger bodies without ATOMIC), so it cannot be used there.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

from kitbuilder.errors import DatabaseError


@dataclass(frozen=True)
class Statement:
    text: str
    line: int  # 1-based line of the statement's first character in the script


def _meaningful(statement: str) -> bool:
    stripped = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.S).strip().strip(";").strip()
    return bool(stripped)


def _line(script: str, offset: int) -> int:
    return script.count("\n", 0, offset) + 1


def sqlite_statements(script: str) -> list[Statement]:
    statements: list[Statement] = []
    start = 0
    position = 0
    while True:
        end = script.find(";", position)
        if end < 0:
            break
        position = end + 1
        candidate = script[start:position]
        if sqlite3.complete_statement(candidate):
            if _meaningful(candidate):
                text = candidate.strip()
                statements.append(Statement(text, _line(script, start + candidate.index(text[0]))))
            start = position
    tail = script[start:]
    if _meaningful(tail):
        text = tail.strip()
        statements.append(Statement(text, _line(script, start + tail.index(text[0]))))
    return statements


def postgres_statements(script: str, *, where: str = "script") -> list[Statement]:
    """Statements as PostgreSQL's parser sees them; DatabaseError naming the line when it cannot parse."""
    import pglast
    from pglast.parser import ParseError

    try:
        slices = pglast.split(script, with_parser=True, only_slices=True)
    except ParseError as exc:
        message, index = (exc.args + (0,))[:2] if exc.args else (str(exc), 0)
        offset = index if isinstance(index, int) and 0 <= index <= len(script) else 0
        number = _statement_number(script, offset)
        raise DatabaseError(
            f"{where}:{_line(script, offset)}: statement {number} does not parse as PostgreSQL: {message}"
        ) from exc
    return [Statement(script[part], _line(script, part.start or 0)) for part in slices]


def _statement_number(script: str, offset: int) -> int:
    """Which statement (1-based) holds ``offset``, by the scanner (which needs no valid grammar)."""
    import pglast
    from pglast.parser import ParseError

    try:
        slices = pglast.split(script, with_parser=False, only_slices=True)
    except ParseError:
        return 1
    return 1 + sum(1 for part in slices if (part.stop or 0) < offset)


def split_sqlite(script: str) -> list[str]:
    return [s.text for s in sqlite_statements(script)]


def split_postgres(script: str) -> list[str]:
    return [s.text for s in postgres_statements(script)]


def split_script(script: str, dialect: str, *, where: str) -> list[Statement]:
    """The statements of ``script`` for ``dialect``; DatabaseError naming ``where`` and the line if unparsable."""
    if dialect == "postgresql":
        return postgres_statements(script, where=where)
    return sqlite_statements(script)


_SQLITE_SYNTAX = re.compile(r'near ".*": syntax error|incomplete input|unrecognized token: .*', re.S)


def parse_error(sql: str, dialect: str) -> str | None:
    """Why ``sql`` (one statement with ``:name`` parameters) is not grammatical for ``dialect``, or None.

    Only the grammar: tables, columns and functions the kit creates do not exist yet, so a name the
    database does not know is not an error here. PostgreSQL: pglast, with each ``:name`` read as a
    ``$n`` parameter. SQLite: its own parser, compiling ``EXPLAIN`` of the statement in an empty
    in-memory database (nothing runs), where a syntax error is reported before names are resolved.
    """
    from kitbuilder.core.jobs import PARAMETER

    if dialect == "postgresql":
        import pglast
        from pglast.parser import ParseError

        numbered = PARAMETER.sub(lambda m: "$1" if m.group(1) else m.group(0), sql)
        try:
            statements = pglast.parse_sql(numbered)
        except ParseError as exc:
            return str(exc.args[0]) if exc.args else str(exc)
        return None if len(statements) == 1 else f"{len(statements)} statements where one belongs"
    connection = sqlite3.connect(":memory:")
    try:
        connection.execute("EXPLAIN " + sql)
    except sqlite3.ProgrammingError as exc:
        # "You can only execute one statement at a time", or a missing parameter value: compiled fine otherwise.
        return str(exc) if "one statement" in str(exc) else None
    except sqlite3.Error as exc:
        return str(exc) if _SQLITE_SYNTAX.fullmatch(str(exc)) else None
    finally:
        connection.close()
    return None


def declared_column_type(script: str, table: str, column: str) -> str | None:
    """The PostgreSQL type ``script`` gives ``table.column`` (CREATE TABLE or ALTER TABLE … ADD COLUMN), or None.

    The last declaration in the script wins; a script that does not parse declares nothing (it is
    refused, naming its line, when the plan is validated). Names compare as PostgreSQL folds them.
    """
    import pglast
    from pglast import ast
    from pglast.parser import ParseError
    from pglast.stream import RawStream

    def folded(name: str) -> str:
        return name[1:-1] if len(name) > 1 and name[0] == name[-1] == '"' else name.lower()

    wanted_table, wanted_column = folded(table.rsplit(".", 1)[-1]), folded(column)
    try:
        statements = pglast.parse_sql(script)
    except ParseError:
        return None
    found: str | None = None
    for raw in statements:
        node = raw.stmt
        definitions: list[object] = []
        relation = node.relation if isinstance(node, ast.CreateStmt | ast.AlterTableStmt) else None
        if relation is None or relation.relname != wanted_table:
            continue
        if isinstance(node, ast.CreateStmt):
            definitions = list(node.tableElts or ())
        elif isinstance(node, ast.AlterTableStmt):
            definitions = [command.def_ for command in node.cmds or () if isinstance(command, ast.AlterTableCmd)]
        for definition in definitions:
            if isinstance(definition, ast.ColumnDef) and definition.colname == wanted_column and definition.typeName:
                found = str(RawStream()(definition.typeName))
    return found

"""Split SQL scripts into statements, so each runs inside our transaction.

sqlite3's ``executescript`` commits first and PostgreSQL refuses
``CREATE INDEX CONCURRENTLY`` inside a multi-statement string, so scripts are
split here. SQLite scripts use SQLite's own completeness test (which knows
trigger bodies); PostgreSQL scripts are split on top-level semicolons outside
quotes, dollar quotes and comments.
"""

from __future__ import annotations

import re
import sqlite3

_DOLLAR_TAG = re.compile(r"\$[A-Za-z_]*\$")


def _meaningful(statement: str) -> bool:
    stripped = re.sub(r"--[^\n]*|/\*.*?\*/", "", statement, flags=re.S).strip().strip(";").strip()
    return bool(stripped)


def split_sqlite(script: str) -> list[str]:
    statements: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if _meaningful(current):
                statements.append(current.strip())
            current = ""
    if _meaningful(current.rstrip(";")):
        statements.append(current.rstrip(";").strip())
    return statements


def split_postgres(script: str) -> list[str]:
    statements: list[str] = []
    start = 0
    index = 0
    length = len(script)
    while index < length:
        char = script[index]
        if char == "-" and script.startswith("--", index):
            newline = script.find("\n", index)
            index = length if newline < 0 else newline + 1
            continue
        if char == "/" and script.startswith("/*", index):
            end = script.find("*/", index + 2)
            index = length if end < 0 else end + 2
            continue
        if char in ("'", '"'):
            index += 1
            while index < length:
                if script[index] == char:
                    if index + 1 < length and script[index + 1] == char:
                        index += 2
                        continue
                    break
                index += 1
            index += 1
            continue
        if char == "$":
            match = _DOLLAR_TAG.match(script, index)
            if match:
                end = script.find(match.group(0), match.end())
                index = length if end < 0 else end + len(match.group(0))
                continue
        if char == ";":
            statement = script[start : index + 1]
            if _meaningful(statement):
                statements.append(statement.strip())
            start = index + 1
        index += 1
    tail = script[start:]
    if _meaningful(tail):
        statements.append(tail.strip())
    return statements

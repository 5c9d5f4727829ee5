"""Database checks a kit declares: counts stable or moved by an expected delta, uniqueness,
referential integrity, SQLite's foreign_key_check, custom SQL. Each halts or warns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kitbuilder.apply import db as dbmod
from kitbuilder.apply.db import Database
from kitbuilder.errors import CheckFailedError


@dataclass
class CheckResult:
    id: str
    kind: str
    passed: bool
    on_fail: str
    observed: Any
    expected: Any
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "passed": self.passed,
            "onFail": self.on_fail,
            "observed": self.observed,
            "expected": self.expected,
            "detail": self.detail,
        }


@dataclass
class CheckBook:
    """Counts measured before the run, and every result after."""

    before: dict[str, int] = field(default_factory=dict)
    results: list[CheckResult] = field(default_factory=list)
    # A delta describes what applying the kit changes; on a rerun where every step was already
    # applied nothing changes, so delta checks report "not applicable" instead of failing.
    changed: bool = False


def _count(db: Database, check: dict[str, Any]) -> int:
    # A table the kit has not created yet holds no rows; counting it as 0 keeps "stable" meaningful.
    if not db.table_exists(check["table"]):
        return 0
    where = f" WHERE {check['where']}" if check.get("where") else ""
    return int(db.query_value(f"SELECT COUNT(*) FROM {check['table']}{where}") or 0)


def measure_before(db: Database, checks: tuple[dict[str, Any], ...], book: CheckBook) -> None:
    for check in checks:
        if check["kind"] == "count":
            try:
                book.before[check["id"]] = _count(db, check)
            except (dbmod.RowError, dbmod.StatementError):
                # The column or table the check names arrives with this kit: nothing to count yet.
                book.before[check["id"]] = 0


def evaluate(db: Database, check: dict[str, Any], book: CheckBook) -> CheckResult:
    kind = check["kind"]
    on_fail = check.get("on_fail", "halt")
    try:
        if kind == "count":
            before = book.before.get(check["id"], 0)
            after = _count(db, check)
            expect = check["expect"]
            expected: Any
            if expect == "stable":
                passed, expected = after == before, before
            elif "delta" in expect and not book.changed:
                return CheckResult(
                    check["id"], kind, True, on_fail, after, None, "nothing applied in this run; delta not applicable"
                )
            elif "delta" in expect:
                expected = before + expect["delta"]
                passed = after == expected
            elif "equals" in expect:
                passed, expected = after == expect["equals"], expect["equals"]
            elif "min" in expect:
                passed, expected = after >= expect["min"], f">= {expect['min']}"
            else:
                passed, expected = after <= expect["max"], f"<= {expect['max']}"
            return CheckResult(check["id"], kind, passed, on_fail, after, expected, f"before {before}")
        if kind == "unique":
            columns = ", ".join(check["columns"])
            where = f" WHERE {check['where']}" if check.get("where") else ""
            duplicates = int(
                db.query_value(
                    f"SELECT COUNT(*) FROM (SELECT {columns} FROM {check['table']}{where} "
                    f"GROUP BY {columns} HAVING COUNT(*) > 1) AS kit_dups"
                )
                or 0
            )
            return CheckResult(check["id"], kind, duplicates == 0, on_fail, duplicates, 0, "duplicate key groups")
        if kind == "foreign-key":
            ref = check["references"]
            orphans = int(
                db.query_value(
                    f"SELECT COUNT(*) FROM {check['table']} AS c LEFT JOIN {ref['table']} AS p "
                    f"ON c.{check['column']} = p.{ref['column']} "
                    f"WHERE c.{check['column']} IS NOT NULL AND p.{ref['column']} IS NULL"
                )
                or 0
            )
            return CheckResult(check["id"], kind, orphans == 0, on_fail, orphans, 0, "orphan rows")
        if kind == "sqlite-foreign-key-check":
            if db.dialect != "sqlite":
                return CheckResult(check["id"], kind, True, on_fail, 0, 0, "PostgreSQL enforces foreign keys")
            violations = len(db.query("PRAGMA foreign_key_check"))
            return CheckResult(check["id"], kind, violations == 0, on_fail, violations, 0, "PRAGMA foreign_key_check")
        value = db.query_value(check["query"])
        passed = bool(value) and value not in ("0", "f", "false")
        return CheckResult(check["id"], kind, passed, on_fail, value, "truthy", check["query"].splitlines()[0][:120])
    except (dbmod.RowError, dbmod.StatementError) as exc:
        # The check's own SQL fails on this database: a failed check. A systemic error (disk, connection,
        # interrupt) propagates and stops the run.
        return CheckResult(check["id"], kind, False, on_fail, None, None, f"error: {exc.reason}")


def run_checks(db: Database, checks: list[dict[str, Any]], book: CheckBook) -> list[CheckResult]:
    """Evaluate ``checks``; record results; raise CheckFailedError at the first failing halt check."""
    results = []
    for check in checks:
        result = evaluate(db, check, book)
        book.results.append(result)
        results.append(result)
        if not result.passed and result.on_fail == "halt":
            raise CheckFailedError(
                f"check {result.id} ({result.kind}) failed: observed {result.observed}, expected {result.expected}"
                + (f" ({result.detail})" if result.detail else "")
            )
    return results

"""Database checks a kit declares: counts stable or moved by an expected delta, uniqueness,
referential integrity, SQLite's foreign_key_check, custom SQL. Each halts or warns.

Checks arrive typed (:mod:`kitbuilder.core.jobs`, one class per kind, validated when the kit
was verified), so each kind reads exactly its own fields. The same evaluation serves the
kit's checks (before/after phases) and a backfill's ``pre_checks``/``post_checks``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kitbuilder.apply import db as dbmod
from kitbuilder.apply.db import Database
from kitbuilder.core.jobs import (
    Check,
    CountCheck,
    ForeignKeyCheck,
    SqlCheck,
    SqliteForeignKeyCheck,
    UniqueCheck,
)
from kitbuilder.errors import CheckFailedError


@dataclass(frozen=True)
class CheckResult:
    id: str
    kind: str
    passed: bool
    on_fail: str
    observed: Any
    expected: Any
    detail: str = ""

    def to_json(self) -> dict[str, object]:
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
    """Counts measured before, and every result after (a run's working state, hence mutable)."""

    before: dict[str, int] = field(default_factory=dict)
    results: list[CheckResult] = field(default_factory=list)
    # A delta describes what applying the kit changes; on a rerun where every step was already
    # applied nothing changes, so delta checks report "not applicable" instead of failing.
    changed: bool = False


def _where(condition: str | None) -> str:
    return f" WHERE {condition}" if condition else ""


def _count(db: Database, check: CountCheck) -> int:
    # A table the kit has not created yet holds no rows; counting it as 0 keeps "stable" meaningful.
    if not db.table_exists(check.table):
        return 0
    return int(db.query_value(str(check_sql(check))) or 0)


def check_sql(check: Check) -> str | None:
    """The one statement a check runs (None for the PRAGMA check), built from its typed fields.

    The plan validator parses these before the run's first statement, so a check whose SQL cannot
    parse stops the run before anything changes instead of failing after every step ran.
    """
    if isinstance(check, CountCheck):
        return f"SELECT COUNT(*) FROM {check.table}{_where(check.where)}"
    if isinstance(check, UniqueCheck):
        columns = ", ".join(check.columns)
        return (
            f"SELECT COUNT(*) FROM (SELECT {columns} FROM {check.table}{_where(check.where)} "
            f"GROUP BY {columns} HAVING COUNT(*) > 1) AS kit_dups"
        )
    if isinstance(check, ForeignKeyCheck):
        return (
            f"SELECT COUNT(*) FROM {check.table} AS c LEFT JOIN {check.references_table} AS p "
            f"ON c.{check.column} = p.{check.references_column} "
            f"WHERE c.{check.column} IS NOT NULL AND p.{check.references_column} IS NULL"
        )
    if isinstance(check, SqlCheck):
        return check.query
    return None


def measure_before(db: Database, checks: tuple[Check, ...] | list[Check], book: CheckBook) -> None:
    for check in checks:
        if isinstance(check, CountCheck):
            try:
                book.before[check.id] = _count(db, check)
            except (dbmod.RowError, dbmod.StatementError):
                # The column or table the check names arrives with this kit: nothing to count yet.
                book.before[check.id] = 0


def _truthy(value: Any) -> bool:
    return bool(value) and value not in ("0", "f", "false")


def _evaluate(db: Database, check: Check, book: CheckBook) -> CheckResult:
    on_fail = check.action
    if isinstance(check, CountCheck):
        before = book.before.get(check.id, 0)
        after = _count(db, check)
        expect = check.expect
        expected: Any
        if expect.mode == "stable":
            passed, expected = after == before, before
        elif expect.mode == "delta" and not book.changed:
            return CheckResult(
                check.id, check.kind, True, on_fail, after, None, "nothing applied in this run; delta not applicable"
            )
        elif expect.mode == "delta":
            expected = before + expect.value
            passed = after == expected
        elif expect.mode == "equals":
            passed, expected = after == expect.value, expect.value
        elif expect.mode == "min":
            passed, expected = after >= expect.value, f">= {expect.value}"
        else:
            passed, expected = after <= expect.value, f"<= {expect.value}"
        return CheckResult(check.id, check.kind, passed, on_fail, after, expected, f"before {before}")
    if isinstance(check, UniqueCheck):
        duplicates = int(db.query_value(str(check_sql(check))) or 0)
        return CheckResult(check.id, check.kind, duplicates == 0, on_fail, duplicates, 0, "duplicate key groups")
    if isinstance(check, ForeignKeyCheck):
        orphans = int(db.query_value(str(check_sql(check))) or 0)
        return CheckResult(check.id, check.kind, orphans == 0, on_fail, orphans, 0, "orphan rows")
    if isinstance(check, SqliteForeignKeyCheck):
        if db.dialect != "sqlite":
            return CheckResult(check.id, check.kind, True, on_fail, 0, 0, "PostgreSQL enforces foreign keys")
        violations = len(db.query("PRAGMA foreign_key_check"))
        return CheckResult(check.id, check.kind, violations == 0, on_fail, violations, 0, "PRAGMA foreign_key_check")
    assert isinstance(check, SqlCheck)
    value = db.query_value(check.query)
    observed = value if value is None or isinstance(value, (int, float, str, bool)) else str(value)
    detail = check.query.strip().splitlines()[0][:120]
    return CheckResult(check.id, check.kind, _truthy(value), on_fail, observed, "truthy", detail)


def evaluate(db: Database, check: Check, book: CheckBook) -> CheckResult:
    try:
        return _evaluate(db, check, book)
    except (dbmod.RowError, dbmod.StatementError) as exc:
        # The check's own SQL fails on this database: a failed check. A systemic error (disk, connection,
        # interrupt) propagates and stops the run.
        return CheckResult(check.id, check.kind, False, check.action, None, None, f"error: {exc.reason}")


def failure_message(result: CheckResult, context: str = "") -> str:
    return (
        f"{context}check {result.id} ({result.kind}) failed: observed {result.observed}, expected {result.expected}"
        + (f" ({result.detail})" if result.detail else "")
    )


def run_checks(db: Database, checks: list[Check] | tuple[Check, ...], book: CheckBook) -> list[CheckResult]:
    """Evaluate ``checks``; record results; raise CheckFailedError at the first failing halt check."""
    results = []
    for check in checks:
        result = evaluate(db, check, book)
        book.results.append(result)
        results.append(result)
        if not result.passed and result.on_fail == "halt":
            raise CheckFailedError(failure_message(result))
    return results

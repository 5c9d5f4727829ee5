"""The checks a kit asks ``kit apply`` to run: a tagged union, one frozen class per kind, parsed strictly.

A check may say only what its kind honours: every other field is refused, so nothing a kit
says is silently ignored. The same values are the manifest's ``checks[]``: an optional field the
spec left out stays None, so ``to_json`` writes the check as the spec wrote it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from kitbuilder.core.fields import IDENTIFIER, INT64_MAX, PHASE, TABLE, Fields, integer, show, type_name
from kitbuilder.errors import FormatError

OnFail = Literal["halt", "warn"]


@dataclass(frozen=True)
class Expect:
    """What a count check expects: ``stable``, or one of delta/equals/min/max with its number."""

    mode: Literal["stable", "delta", "equals", "min", "max"]
    value: int = 0

    def to_json(self) -> str | dict[str, int]:
        return "stable" if self.mode == "stable" else {self.mode: self.value}


def _common(check: Check, **fields: object) -> dict[str, object]:
    """A check's JSON: id, kind, the kind's own ``fields`` and whichever optional ones were written."""
    data: dict[str, object] = {"id": check.id, "kind": check.kind}
    data.update({name: value for name, value in fields.items() if value is not None})
    if check.phase is not None:
        data["phase"] = check.phase
    if check.on_fail is not None:
        data["on_fail"] = check.on_fail
    return data


@dataclass(frozen=True)
class CountCheck:
    kind: ClassVar[str] = "count"
    id: str
    table: str
    expect: Expect
    where: str | None = None
    phase: str | None = None
    on_fail: OnFail | None = None  # None: not written, halt

    @property
    def action(self) -> OnFail:
        return self.on_fail or "halt"

    def to_json(self) -> dict[str, object]:
        return _common(self, table=self.table, expect=self.expect.to_json(), where=self.where)


@dataclass(frozen=True)
class UniqueCheck:
    kind: ClassVar[str] = "unique"
    id: str
    table: str
    columns: tuple[str, ...]
    where: str | None = None
    phase: str | None = None
    on_fail: OnFail | None = None  # None: not written, halt

    @property
    def action(self) -> OnFail:
        return self.on_fail or "halt"

    def to_json(self) -> dict[str, object]:
        return _common(self, table=self.table, columns=list(self.columns), where=self.where)


@dataclass(frozen=True)
class ForeignKeyCheck:
    kind: ClassVar[str] = "foreign-key"
    id: str
    table: str
    column: str
    references_table: str
    references_column: str
    phase: str | None = None
    on_fail: OnFail | None = None  # None: not written, halt

    @property
    def action(self) -> OnFail:
        return self.on_fail or "halt"

    def to_json(self) -> dict[str, object]:
        references = {"table": self.references_table, "column": self.references_column}
        return _common(self, table=self.table, column=self.column, references=references)


@dataclass(frozen=True)
class SqliteForeignKeyCheck:
    kind: ClassVar[str] = "sqlite-foreign-key-check"
    id: str
    phase: str | None = None
    on_fail: OnFail | None = None  # None: not written, halt

    @property
    def action(self) -> OnFail:
        return self.on_fail or "halt"

    def to_json(self) -> dict[str, object]:
        return _common(self)


@dataclass(frozen=True)
class SqlCheck:
    kind: ClassVar[str] = "sql"
    id: str
    query: str
    phase: str | None = None
    on_fail: OnFail | None = None  # None: not written, halt
    expect: Literal["truthy"] | None = None  # what a sql check always does; kept when the spec spells it out

    @property
    def action(self) -> OnFail:
        return self.on_fail or "halt"

    def to_json(self) -> dict[str, object]:
        return _common(self, query=self.query, expect=self.expect)


Check = CountCheck | UniqueCheck | ForeignKeyCheck | SqliteForeignKeyCheck | SqlCheck
CHECK_KINDS = ("count", "unique", "foreign-key", "sqlite-foreign-key-check", "sql")


def _expect(value: Any, fail: Callable[[str], FormatError]) -> Expect:
    if value == "stable":
        return Expect("stable")
    if isinstance(value, dict) and len(value) == 1:
        ((mode, number),) = value.items()
        if mode in ("delta", "equals", "min", "max"):
            low = -INT64_MAX if mode == "delta" else 0
            return Expect(mode, integer(number, low, INT64_MAX, lambda m: fail(f"{mode}: {m}")))
    raise fail(f"expected stable, or one of {{delta|equals|min|max: N}}, got {show(value)}")


def parse_check(data: object, where: str, *, in_job: bool = False) -> Check:
    """One check; ``in_job`` for a backfill's pre/post checks, which have no phase of their own."""
    fields = Fields(data, where)
    check_id = fields.required_text("id", pattern=PHASE)
    fields.where = where = f"{where} ({check_id})"
    kind = fields.required_text("kind")
    if kind not in CHECK_KINDS:
        raise fields.fail("kind", f"{show(kind)} is not one of {', '.join(CHECK_KINDS)}")
    phase = None if in_job else fields.text("phase", pattern=PHASE)
    on_fail_text = fields.text("on_fail")
    if on_fail_text not in (None, "halt", "warn"):
        raise fields.fail("on_fail", f"{show(on_fail_text)} is not halt or warn")
    on_fail: OnFail | None = None if on_fail_text is None else "halt" if on_fail_text == "halt" else "warn"
    check: Check
    if kind == "count":
        check = CountCheck(
            id=check_id,
            table=fields.required_text("table", pattern=TABLE),
            expect=_expect(fields.get("expect", True), lambda m: fields.fail("expect", m)),
            where=fields.text("where", nonempty=True),
            phase=phase,
            on_fail=on_fail,
        )
    elif kind == "unique":
        check = UniqueCheck(
            id=check_id,
            table=fields.required_text("table", pattern=TABLE),
            columns=fields.names("columns", pattern=IDENTIFIER, required=True),
            where=fields.text("where", nonempty=True),
            phase=phase,
            on_fail=on_fail,
        )
    elif kind == "foreign-key":
        references = Fields(fields.get("references", True), f"{where}: references")
        check = ForeignKeyCheck(
            id=check_id,
            table=fields.required_text("table", pattern=TABLE),
            column=fields.required_text("column", pattern=IDENTIFIER),
            references_table=references.required_text("table", pattern=TABLE),
            references_column=references.required_text("column", pattern=IDENTIFIER),
            phase=phase,
            on_fail=on_fail,
        )
        references.finish()
    elif kind == "sqlite-foreign-key-check":
        check = SqliteForeignKeyCheck(id=check_id, phase=phase, on_fail=on_fail)
    else:
        query = fields.required_text("query", nonempty=True)
        # `expect: truthy` is what a sql check always does; accepted for specs that spell it out.
        expect = fields.raw("expect")
        if expect not in (None, "truthy"):
            raise fields.fail("expect", f"a sql check passes when its query returns a true value; got {show(data)}")
        check = SqlCheck(
            id=check_id, query=query, phase=phase, on_fail=on_fail, expect=None if expect is None else "truthy"
        )
    fields.finish()
    return check


def parse_checks(items: object, where: str, *, in_job: bool = False) -> tuple[Check, ...]:
    if not isinstance(items, (list, tuple)):
        raise FormatError(f"{where}: expected a list of checks, got {type_name(items)}")
    checks = tuple(parse_check(item, f"{where}[{number}]", in_job=in_job) for number, item in enumerate(items))
    ids = [c.id for c in checks]
    for number, check_id in enumerate(ids):
        if check_id in ids[:number]:
            raise FormatError(f"{where}[{number}]: check id {show(check_id)} is used twice")
    return checks

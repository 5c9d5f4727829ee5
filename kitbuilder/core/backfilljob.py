"""Backfill job files (schemas/backfill.schema.json): YAML in a kit (or beside a spec), every field typed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from kitbuilder.core import schemas
from kitbuilder.core.fields import IDENTIFIER, TABLE, Fields, show
from kitbuilder.core.kitchecks import Check, parse_checks
from kitbuilder.errors import FormatError, KitError

DEFAULT_BATCH = 500
DEFAULT_ERROR_RATE = 0.01
DEFAULT_MIN_SAMPLE = 100
MAX_BATCH = 1_000_000
MAX_MIN_SAMPLE = 1_000_000_000
# Not kit_*: those are the names kit's own metrics use in metrics.prom.
METRIC = re.compile(r"(?!kit_)[a-z_][a-z0-9_]*")

PARAMETER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|:([A-Za-z_][A-Za-z0-9_]*)")


def named_parameters(sql: str) -> frozenset[str]:
    """The ``:name`` parameters of a statement, outside quotes (``::`` casts are not parameters)."""
    return frozenset(match.group(1) for match in PARAMETER.finditer(sql) if match.group(1))


@dataclass(frozen=True)
class BackfillJob:
    """A backfill job file (schemas/backfill.schema.json), every field typed."""

    table: str
    key: str
    predicate: str
    set: tuple[tuple[str, str], ...] = ()
    update: str | None = None
    tenant_column: str | None = None
    revert: str | None = None
    batch_size: int = DEFAULT_BATCH
    error_rate_threshold: float = DEFAULT_ERROR_RATE
    min_sample: int = DEFAULT_MIN_SAMPLE
    metric: str | None = None
    description: str = ""
    pre_checks: tuple[Check, ...] = ()
    post_checks: tuple[Check, ...] = ()

    @classmethod
    def from_json(cls, document: Any, where: str) -> BackfillJob:
        fields = Fields(document, where)
        assignments = fields.raw("set")
        update = fields.text("update", nonempty=True)
        if (assignments is None) == (update is None):
            raise FormatError(f"{where}: give exactly one of set (column: expression) or update (a statement)")
        pairs: tuple[tuple[str, str], ...] = ()
        if assignments is not None:
            if not isinstance(assignments, dict) or not assignments:
                raise fields.fail("set", f"expected a mapping of column: SQL expression, got {show(assignments)}")
            for column, expression in assignments.items():
                if not isinstance(column, str) or not IDENTIFIER.fullmatch(column):
                    raise fields.fail("set", f"{show(column)} is not a column name")
                if not isinstance(expression, str) or not expression.strip():
                    raise fields.fail(f"set.{column}", f"expected an SQL expression, got {show(expression)}")
            pairs = tuple(assignments.items())
        if update is not None:
            used = named_parameters(update)
            missing = {"lo", "hi"} - used
            if missing:
                raise fields.fail("update", "must use :lo and :hi (inclusive key bounds) to restrict each batch")
            unknown = used - {"lo", "hi", "tenant"}
            if unknown:
                raise fields.fail(
                    "update", f"uses :{sorted(unknown)[0]}; only :lo, :hi and :tenant are bound by kit apply"
                )
        job = cls(
            table=fields.required_text("table", pattern=TABLE),
            key=fields.required_text("key", pattern=IDENTIFIER),
            predicate=fields.required_text("predicate", nonempty=True),
            set=pairs,
            update=update,
            tenant_column=fields.text("tenant_column", pattern=IDENTIFIER),
            revert=fields.text("revert", nonempty=True),
            batch_size=fields.integer("batch_size", default=DEFAULT_BATCH, low=1, high=MAX_BATCH),
            error_rate_threshold=fields.number("error_rate_threshold", default=DEFAULT_ERROR_RATE, low=0, high=1),
            min_sample=fields.integer("min_sample", default=DEFAULT_MIN_SAMPLE, low=1, high=MAX_MIN_SAMPLE),
            metric=fields.text("metric", pattern=METRIC),
            description=fields.text("description") or "",
            pre_checks=parse_checks(fields.raw("pre_checks") or [], f"{where}: pre_checks", in_job=True),
            post_checks=parse_checks(fields.raw("post_checks") or [], f"{where}: post_checks", in_job=True),
        )
        fields.finish()
        return job

    @property
    def tenant_problem(self) -> str | None:
        """Why ``--tenant`` cannot limit this job to one tenant, or None when it can."""
        if self.tenant_column is None:
            return "declares no tenant_column"
        if self.update is not None and "tenant" not in named_parameters(self.update):
            return "has an update statement that does not use :tenant"
        return None


def load_backfill_job(data: bytes | str, where: str, *, error: type[KitError] = FormatError) -> BackfillJob:
    """Parse a job file (YAML): schema first (naming the line), then the typed fields.

    ``error`` is FormatError for a file inside a kit and SpecError when ``kit build`` reads a spec's job.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise error(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    # PyYAML loads with the first job file: a kit without backfill jobs (and every `kit verify` of one) needs none.
    from kitbuilder.core.yamllines import field_name, load_with_lines

    document, lines = load_with_lines(text, where, error=error, empty="the job file is empty; expected a mapping")
    problem = schemas.first_error("backfill", document)
    if problem is not None:
        location = tuple(problem.absolute_path)
        probe = location
        while probe not in lines and probe:
            probe = probe[:-1]
        raise error(f"{where}:{lines.get(probe, 1)}: {field_name(location)}: {problem.message}")
    try:
        return BackfillJob.from_json(document, where)
    except FormatError as exc:
        if error is FormatError:
            raise
        raise error(str(exc)) from exc

"""Typed apply jobs: what a kit's migrations, seeds, backfills and checks ask ``kit apply`` to do.

Everything apply reads from a kit is parsed here, strictly, into frozen values: the
component options of the signed manifest, its checks (a tagged union, one class per
kind), and the backfill job files. A wrong type, a missing or unknown field, or an
integer out of range is a FormatError naming the component and the field. ``kit verify``
calls :meth:`KitJobs.from_manifest` on the verified bytes, and ``kit apply`` builds its
plan from the same call, so a kit that verifies either applies or is refused before any
statement runs; ``kit build`` refuses the same things in a spec.

Pure: bytes come in through a ``read`` callback, nothing touches paths or databases.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from kitbuilder.core import schemas
from kitbuilder.core.manifest import FileEntry, Manifest
from kitbuilder.core.yamllines import field_name, load_with_lines
from kitbuilder.errors import FormatError, KitError

# SQLite and PostgreSQL both store integers as signed 64-bit values.
INT64_MAX = 2**63 - 1
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A table, optionally schema-qualified: one dot at most (PostgreSQL reads a.b.c as another database).
TABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?")
PHASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
# Not kit_*: those are the names kit's own metrics use in metrics.prom.
METRIC = re.compile(r"(?!kit_)[a-z_][a-z0-9_]*")
# A file name relative to its component's directory (the manifest's path rule, one level or more).
COMPONENT_FILE = re.compile(r"(?!\.{1,2}(/|$))(?!.*/\.{1,2}(/|$))[A-Za-z0-9._+@=,-]+(/[A-Za-z0-9._+@=,-]+)*")
SEED_SUFFIXES = (".ndjson", ".jsonl", ".csv")
APPLY_ROLES = ("migration", "seed", "backfill")
DEFAULT_BATCH = 500
DEFAULT_ERROR_RATE = 0.01
DEFAULT_MIN_SAMPLE = 100
MAX_BATCH = 1_000_000
MAX_MIN_SAMPLE = 1_000_000_000

OnFail = Literal["halt", "warn"]


def _show(value: Any) -> str:
    """A value from a kit, safe for a terminal and short enough for one line."""
    text = ascii(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


_MISSING: Any = object()


class _Fields:
    """Strict reads from one mapping: every field typed, every unread field an error (see ``finish``)."""

    def __init__(self, data: Any, where: str) -> None:
        if not isinstance(data, dict):
            raise FormatError(f"{where}: expected a mapping, got {_type_name(data)}")
        self.data: dict[str, Any] = data
        self.where = where
        self.read: list[str] = []

    def fail(self, name: str, message: str) -> FormatError:
        return FormatError(f"{self.where}: {name}: {message}")

    def _get(self, name: str, required: bool) -> Any:
        self.read.append(name)
        if name not in self.data:
            if required:
                raise self.fail(name, "required field is missing")
            return _MISSING
        return self.data[name]

    def text(
        self, name: str, *, required: bool = False, pattern: re.Pattern[str] | None = None, nonempty: bool = False
    ) -> str | None:
        value = self._get(name, required)
        if value is _MISSING:
            return None
        if not isinstance(value, str):
            raise self.fail(name, f"expected a string, got {_type_name(value)} {_show(value)}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(name, f"{_show(value)} does not match {pattern.pattern}")
        if nonempty and not value.strip():
            raise self.fail(name, "must not be empty")
        return value

    def required_text(self, name: str, *, pattern: re.Pattern[str] | None = None, nonempty: bool = False) -> str:
        value = self.text(name, required=True, pattern=pattern, nonempty=nonempty)
        assert value is not None
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self._get(name, False)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise self.fail(name, f"expected true or false, got {_type_name(value)} {_show(value)}")
        return value

    def integer(self, name: str, *, default: int, low: int, high: int) -> int:
        value = self._get(name, False)
        if value is _MISSING:
            return default
        return _integer(value, low, high, lambda message: self.fail(name, message))

    def number(self, name: str, *, default: float, low: float, high: float) -> float:
        value = self._get(name, False)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.fail(name, f"expected a number, got {_type_name(value)} {_show(value)}")
        if not low <= value <= high:
            raise self.fail(name, f"{_show(value)} is out of range ({low}..{high})")
        return float(value)

    def names(self, name: str, *, pattern: re.Pattern[str], required: bool = False) -> tuple[str, ...]:
        value = self._get(name, required)
        if value is _MISSING:
            return ()
        if not isinstance(value, list) or not value:
            raise self.fail(name, f"expected a non-empty list of names, got {_type_name(value)} {_show(value)}")
        for item in value:
            if not isinstance(item, str) or not pattern.fullmatch(item):
                raise self.fail(name, f"{_show(item)} is not a name matching {pattern.pattern}")
        if len(set(value)) != len(value):
            raise self.fail(name, "names a column twice")
        return tuple(value)

    def raw(self, name: str) -> Any:
        value = self._get(name, False)
        return None if value is _MISSING else value

    def finish(self) -> None:
        unknown = sorted(set(self.data) - set(self.read), key=str)
        if unknown:
            raise FormatError(
                f"{self.where}: unknown field {_show(unknown[0])} (allowed: {', '.join(sorted(set(self.read)))}); "
                "kit would not know what to do with it"
            )


def _integer(value: Any, low: int, high: int, fail: Callable[[str], FormatError]) -> int:
    # bool is an int in Python, but `true` is not a number in a kit.
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"expected an integer, got {_type_name(value)} {_show(value)}")
    if not low <= value <= high:
        raise fail(f"{value} is out of range ({low}..{high})")
    return value


PARAMETER = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|:([A-Za-z_][A-Za-z0-9_]*)")


def named_parameters(sql: str) -> frozenset[str]:
    """The ``:name`` parameters of a statement, outside quotes (``::`` casts are not parameters)."""
    return frozenset(match.group(1) for match in PARAMETER.finditer(sql) if match.group(1))


# Checks ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expect:
    """What a count check expects: ``stable``, or one of delta/equals/min/max with its number."""

    mode: Literal["stable", "delta", "equals", "min", "max"]
    value: int = 0

    def to_json(self) -> Any:
        return "stable" if self.mode == "stable" else {self.mode: self.value}


@dataclass(frozen=True)
class CountCheck:
    kind: ClassVar[str] = "count"
    id: str
    table: str
    expect: Expect
    where: str | None = None
    phase: str | None = None
    on_fail: OnFail = "halt"


@dataclass(frozen=True)
class UniqueCheck:
    kind: ClassVar[str] = "unique"
    id: str
    table: str
    columns: tuple[str, ...]
    where: str | None = None
    phase: str | None = None
    on_fail: OnFail = "halt"


@dataclass(frozen=True)
class ForeignKeyCheck:
    kind: ClassVar[str] = "foreign-key"
    id: str
    table: str
    column: str
    references_table: str
    references_column: str
    phase: str | None = None
    on_fail: OnFail = "halt"


@dataclass(frozen=True)
class SqliteForeignKeyCheck:
    kind: ClassVar[str] = "sqlite-foreign-key-check"
    id: str
    phase: str | None = None
    on_fail: OnFail = "halt"


@dataclass(frozen=True)
class SqlCheck:
    kind: ClassVar[str] = "sql"
    id: str
    query: str
    phase: str | None = None
    on_fail: OnFail = "halt"


Check = CountCheck | UniqueCheck | ForeignKeyCheck | SqliteForeignKeyCheck | SqlCheck
CHECK_KINDS = ("count", "unique", "foreign-key", "sqlite-foreign-key-check", "sql")


def _expect(value: Any, fail: Callable[[str], FormatError]) -> Expect:
    if value == "stable":
        return Expect("stable")
    if isinstance(value, dict) and len(value) == 1:
        ((mode, number),) = value.items()
        if mode in ("delta", "equals", "min", "max"):
            low = -INT64_MAX if mode == "delta" else 0
            return Expect(mode, _integer(number, low, INT64_MAX, lambda m: fail(f"{mode}: {m}")))
    raise fail(f"expected stable, or one of {{delta|equals|min|max: N}}, got {_show(value)}")


def parse_check(data: Any, where: str, *, in_job: bool = False) -> Check:
    """One check; ``in_job`` for a backfill's pre/post checks, which have no phase of their own."""
    fields = _Fields(data, where)
    check_id = fields.required_text("id", pattern=PHASE)
    fields.where = where = f"{where} ({check_id})"
    kind = fields.required_text("kind")
    if kind not in CHECK_KINDS:
        raise fields.fail("kind", f"{_show(kind)} is not one of {', '.join(CHECK_KINDS)}")
    phase = None if in_job else fields.text("phase", pattern=PHASE)
    on_fail_text = fields.text("on_fail") or "halt"
    if on_fail_text not in ("halt", "warn"):
        raise fields.fail("on_fail", f"{_show(on_fail_text)} is not halt or warn")
    on_fail: OnFail = "halt" if on_fail_text == "halt" else "warn"
    check: Check
    if kind == "count":
        check = CountCheck(
            id=check_id,
            table=fields.required_text("table", pattern=TABLE),
            expect=_expect(fields._get("expect", True), lambda m: fields.fail("expect", m)),
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
        references = _Fields(fields._get("references", True), f"{where}: references")
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
        if fields.raw("expect") not in (None, "truthy"):
            raise fields.fail("expect", f"a sql check passes when its query returns a true value; got {_show(data)}")
        check = SqlCheck(id=check_id, query=query, phase=phase, on_fail=on_fail)
    fields.finish()
    return check


def parse_checks(items: Any, where: str, *, in_job: bool = False) -> tuple[Check, ...]:
    if not isinstance(items, (list, tuple)):
        raise FormatError(f"{where}: expected a list of checks, got {_type_name(items)}")
    checks = tuple(parse_check(item, f"{where}[{number}]", in_job=in_job) for number, item in enumerate(items))
    ids = [c.id for c in checks]
    for number, check_id in enumerate(ids):
        if check_id in ids[:number]:
            raise FormatError(f"{where}[{number}]: check id {_show(check_id)} is used twice")
    return checks


# Component options -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationOptions:
    """``up``/``verify``/``revert`` name files of the component; None = the default name, when present."""

    up: str = "up.sql"
    verify: str | None = None
    revert: str | None = None
    transactional: bool = True
    idempotent: bool = False

    @classmethod
    def from_json(cls, options: Any, where: str) -> MigrationOptions:
        fields = _Fields(options, where)
        # The spec schema's defaults are written into the manifest (`verify: verify.sql` on every migration),
        # so a default name means "when present"; any other name must be a file of the component.
        verify = fields.text("verify", pattern=COMPONENT_FILE)
        revert = fields.text("revert", pattern=COMPONENT_FILE)
        result = cls(
            up=fields.text("up", pattern=COMPONENT_FILE) or "up.sql",
            verify=None if verify == "verify.sql" else verify,
            revert=None if revert == "revert.sql" else revert,
            transactional=fields.flag("transactional", True),
            idempotent=fields.flag("idempotent", False),
        )
        fields.finish()
        return result


@dataclass(frozen=True)
class SeedOptions:
    table: str
    key: tuple[str, ...]

    @classmethod
    def from_json(cls, options: Any, where: str) -> SeedOptions:
        fields = _Fields(options, where)
        result = cls(
            table=fields.required_text("table", pattern=TABLE),
            key=fields.names("key", pattern=IDENTIFIER, required=True),
        )
        fields.finish()
        return result


# Backfill jobs -----------------------------------------------------------------------------------------------


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
        fields = _Fields(document, where)
        assignments = fields.raw("set")
        update = fields.text("update", nonempty=True)
        if (assignments is None) == (update is None):
            raise FormatError(f"{where}: give exactly one of set (column: expression) or update (a statement)")
        pairs: tuple[tuple[str, str], ...] = ()
        if assignments is not None:
            if not isinstance(assignments, dict) or not assignments:
                raise fields.fail("set", f"expected a mapping of column: SQL expression, got {_show(assignments)}")
            for column, expression in assignments.items():
                if not isinstance(column, str) or not IDENTIFIER.fullmatch(column):
                    raise fields.fail("set", f"{_show(column)} is not a column name")
                if not isinstance(expression, str) or not expression.strip():
                    raise fields.fail(f"set.{column}", f"expected an SQL expression, got {_show(expression)}")
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


# Jobs of a kit -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationJob:
    kind: ClassVar[str] = "migration"
    id: str
    phase: str | None
    options: MigrationOptions
    up: str  # file names relative to the component
    verify: str | None
    revert: str | None
    files: Mapping[str, FileEntry]
    raw_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SeedJob:
    kind: ClassVar[str] = "seed"
    id: str
    phase: str | None
    options: SeedOptions
    data: tuple[str, ...]  # the .ndjson/.jsonl/.csv files, loaded in this order
    files: Mapping[str, FileEntry]
    raw_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackfillComponent:
    kind: ClassVar[str] = "backfill"
    id: str
    phase: str | None
    job_file: str
    job: BackfillJob
    files: Mapping[str, FileEntry]
    raw_options: Mapping[str, Any] = field(default_factory=dict)


Job = MigrationJob | SeedJob | BackfillComponent


def component_files(manifest: Manifest, component_id: str) -> dict[str, FileEntry]:
    """A component's files by their name relative to the component's common directory."""
    entries = [f for f in manifest.files if f.component == component_id]
    if not entries:
        return {}
    parts = [e.path.split("/")[:-1] for e in entries]
    common: list[str] = []
    for segments in zip(*parts, strict=False):
        if any(s != segments[0] for s in segments):
            break
        common.append(segments[0])
    prefix = "/".join(common)
    return {(e.path[len(prefix) + 1 :] if prefix else e.path): e for e in entries}


def _job(manifest: Manifest, position: int, read: Callable[[FileEntry], bytes]) -> Job | None:
    component = manifest.components[position]
    if component.role not in APPLY_ROLES:
        # No other role has options (kit build writes none); one that did would be silently ignored.
        _Fields(component.options, f"{manifest_where(position)} ({component.role} {component.id}): options").finish()
        return None
    where = f"{manifest_where(position)} ({component.role} {component.id})"
    if component.phase is not None and not PHASE.fullmatch(component.phase):
        raise FormatError(f"{where}: phase: {_show(component.phase)} does not match {PHASE.pattern}")
    if component.subject is not None:
        raise FormatError(f"{where}: subject: only sbom components describe a subject")
    files = component_files(manifest, component.id)
    options_where = f"{where}: options"
    if component.role == "migration":
        options = MigrationOptions.from_json(component.options, options_where)

        def named(role: str, given: str | None, default: str) -> str | None:
            name = given or default
            if name in files:
                return name
            if given is not None or role == "up":
                raise FormatError(f"{options_where}.{role}: the component has no file {_show(name)}")
            return None

        up = named("up", options.up if options.up != "up.sql" else None, "up.sql")
        assert up is not None
        verify = named("verify", options.verify, "verify.sql")
        if not options.transactional and verify is None and not options.idempotent:
            raise FormatError(
                f"{options_where}: transactional: false needs idempotent: true or a verify script, "
                "so a crash can be resolved"
            )
        return MigrationJob(
            id=component.id,
            phase=component.phase,
            options=options,
            up=up,
            verify=verify,
            revert=named("revert", options.revert, "revert.sql"),
            files=files,
            raw_options=component.options,
        )
    if component.role == "seed":
        seed = SeedOptions.from_json(component.options, options_where)
        data = tuple(sorted(name for name in files if name.endswith(SEED_SUFFIXES)))
        if not data:
            raise FormatError(f"{where}: no {'/'.join(SEED_SUFFIXES)} file to load")
        return SeedJob(
            id=component.id, phase=component.phase, options=seed, data=data, files=files, raw_options=component.options
        )
    _Fields(component.options, options_where).finish()  # a backfill's options live in its job file
    yaml_files = sorted(name for name in files if name.endswith((".yaml", ".yml")))
    job_file = "job.yaml" if "job.yaml" in files else (yaml_files[0] if len(yaml_files) == 1 else None)
    if job_file is None:
        raise FormatError(f"{where}: no job YAML (job.yaml, or a single .yaml file)")
    job = load_backfill_job(read(files[job_file]), files[job_file].path)
    return BackfillComponent(
        id=component.id,
        phase=component.phase,
        job_file=job_file,
        job=job,
        files=files,
        raw_options=component.options,
    )


def manifest_where(position: int) -> str:
    return f"manifest components[{position}]"


@dataclass(frozen=True)
class KitJobs:
    """Every job and check of a full kit, in manifest order."""

    jobs: tuple[Job, ...]
    checks: tuple[Check, ...]

    @property
    def phases(self) -> frozenset[str]:
        return frozenset(job.phase for job in self.jobs if job.phase is not None)

    @classmethod
    def from_manifest(cls, manifest: Manifest, read: Callable[[FileEntry], bytes]) -> KitJobs:
        """Parse every apply job and check; ``read`` returns a (small, verified) payload file's bytes.

        A delta kit carries only changed files, so its jobs are checked when the patched kit is verified.
        """
        if manifest.delta is not None:
            return cls(jobs=(), checks=())
        jobs = tuple(
            job for position in range(len(manifest.components)) if (job := _job(manifest, position, read)) is not None
        )
        ids = [job.id for job in jobs]
        for number, job_id in enumerate(ids):
            if job_id in ids[:number]:
                raise FormatError(f"manifest components: id {_show(job_id)} is used twice")
        checks = parse_checks(list(manifest.checks), "manifest checks")
        phases = {job.phase for job in jobs if job.phase is not None}
        for number, check in enumerate(checks):
            if check.phase is not None and check.phase not in phases:
                raise FormatError(
                    f"manifest checks[{number}] ({check.id}): phase: {_show(check.phase)} is not a phase of this kit "
                    f"({', '.join(sorted(phases)) or 'none'}); the check would never run where it says"
                )
        return cls(jobs=jobs, checks=checks)

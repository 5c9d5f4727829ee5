"""The apply plan: a verified kit's migrations, seeds and backfills in the order they run.

Phases sort naturally ("21-101" < "21-102" < "21-103"); within a phase,
migrations run first (in spec order), then seeds, then backfills. Components
without a phase run after every phased one. The plan is built only from a
verified manifest and the staging directory its bytes were extracted to, by the
same parser ``kit verify`` ran (:class:`kitbuilder.core.jobs.KitJobs`), and
:func:`validate_plan` checks everything a run depends on before its first statement.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitbuilder.apply import sqlsplit
from kitbuilder.apply.checks import check_sql
from kitbuilder.core.jobs import (
    IDENTIFIER,
    BackfillComponent,
    BackfillJob,
    Check,
    Job,
    KitJobs,
    MigrationJob,
    SeedJob,
)
from kitbuilder.core.manifest import FileEntry, Manifest
from kitbuilder.core.manifest_parts import ComponentOptions
from kitbuilder.core.text import printable
from kitbuilder.errors import DatabaseError, FormatError, UsageError

_ROLE_ORDER = {"migration": 0, "seed": 1, "backfill": 2}
LAST_PHASE = "~"  # sorts after every phase name the spec allows


def phase_key(phase: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key of a phase name: digit runs compare as numbers (``21-9`` before ``21-10``), ``~`` last."""
    if phase == LAST_PHASE:
        return ((2, ""),)
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", phase) if part)


@dataclass(frozen=True)
class Step:
    """One job of the plan with its staged files: ``up``/``verify``/``revert`` for a migration,
    the data files for a seed, ``job`` for a backfill."""

    id: str
    kind: str  # migration | seed | backfill
    phase: str
    checksum: str
    files: Mapping[str, Path]
    job: Job

    def text(self, name: str) -> str | None:
        path = self.files.get(name)
        return path.read_text("utf-8") if path is not None else None

    @property
    def migration(self) -> MigrationJob:
        if not isinstance(self.job, MigrationJob):
            raise TypeError(f"{self.id} is a {self.kind}, not a migration")
        return self.job

    @property
    def seed(self) -> SeedJob:
        if not isinstance(self.job, SeedJob):
            raise TypeError(f"{self.id} is a {self.kind}, not a seed")
        return self.job

    @property
    def backfill(self) -> BackfillJob:
        if not isinstance(self.job, BackfillComponent):
            raise TypeError(f"{self.id} is a {self.kind}, not a backfill")
        return self.job.job


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    checks: tuple[Check, ...]
    # Set by `limited_to_tenant`: what a tenant-limited run leaves for a full apply.
    deferred_steps: tuple[str, ...] = ()
    deferred_checks: tuple[str, ...] = ()

    @property
    def phases(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for step in self.steps:
            seen.setdefault(step.phase, None)
        return tuple(seen)

    def checks_for_phase(self, phase: str | None) -> list[Check]:
        """The checks that run when ``phase`` is done (None: at the end of the run)."""
        return [c for c in self.checks if c.phase == phase]

    def limited_to_tenant(self) -> Plan:
        """The part of the plan a ``--tenant`` run executes.

        A backfill limited to one tenant leaves its phase unfinished for the others, so that
        phase's checks, the final checks and every later phase (which may rely on the backfill
        being complete) wait for a full apply, as do the backfills' own post_checks. Earlier phases
        run as usual.
        """
        backfill_phases = [s.phase for s in self.steps if s.kind == "backfill"]
        if not backfill_phases:
            return self
        stop = min(backfill_phases, key=phase_key)
        steps = tuple(s for s in self.steps if phase_key(s.phase) <= phase_key(stop))
        checks = tuple(c for c in self.checks if c.phase is not None and phase_key(c.phase) < phase_key(stop))
        return Plan(
            steps=steps,
            checks=checks,
            deferred_steps=tuple(s.id for s in self.steps if s not in steps),
            # A job's post_checks judge its whole table, which a tenant run leaves unfinished for the others.
            deferred_checks=tuple(c.id for c in self.checks if c not in checks)
            + tuple(c.id for s in steps if s.kind == "backfill" for c in s.backfill.post_checks),
        )


def _checksum(files: Mapping[str, FileEntry], signed: ComponentOptions) -> str:
    # kit-sha256-v1: recorded in kit_migrations, so it must not change for the same component: the options as
    # the manifest signs them (JSON values, their Python repr), not as apply reads them.
    options = signed.to_json()
    lines = [f"{name}:{entry.sha256}" for name, entry in sorted(files.items())]
    lines += [f"option:{key}={options[key]!r}" for key in sorted(options)]
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _staged(staging: Path, entry: FileEntry) -> Path:
    return staging.joinpath(*entry.path.split("/"))


def build_plan(manifest: Manifest, staging: Path) -> Plan:
    """The ordered plan of a verified kit whose members were extracted to ``staging``."""
    kit_jobs = KitJobs.from_manifest(manifest, lambda entry: _staged(staging, entry).read_bytes())
    position = {c.id: number for number, c in enumerate(manifest.components)}
    steps: list[tuple[tuple[Any, ...], Step]] = []
    for job in kit_jobs.jobs:
        files: dict[str, Path]
        if isinstance(job, MigrationJob):
            names = {"up": job.up, "verify": job.verify, "revert": job.revert}
            files = {role: _staged(staging, job.files[name]) for role, name in names.items() if name is not None}
        elif isinstance(job, SeedJob):
            files = {name: _staged(staging, job.files[name]) for name in job.data}
        else:
            files = {"job": _staged(staging, job.files[job.job_file])}
        phase = job.phase or LAST_PHASE
        step = Step(job.id, job.kind, phase, _checksum(job.files, job.raw_options), files, job)
        steps.append(((phase_key(phase), _ROLE_ORDER[job.kind], position[job.id]), step))
    steps.sort(key=lambda item: item[0])
    return Plan(steps=tuple(step for _, step in steps), checks=kit_jobs.checks)


def tenant_problems(plan: Plan) -> list[str]:
    """Why ``--tenant`` cannot be honoured by this plan (empty when it can)."""
    backfills = [s for s in plan.steps if s.kind == "backfill"]
    if not backfills:
        return ["the kit has no backfill; --tenant limits backfills to one tenant"]
    return [f"backfill {s.id} {problem}" for s in backfills if (problem := s.backfill.tenant_problem) is not None]


def validate_plan(plan: Plan, *, dialect: str, tenant: str | None) -> None:
    """Everything the run depends on, checked before its first statement.

    Raises UsageError for options the plan cannot honour (``--tenant`` on a job that cannot be
    limited to a tenant) and DatabaseError naming file and line for a script that does not parse.
    """
    if tenant is not None:
        if not tenant.strip():
            raise UsageError("--tenant: empty tenant name")
        problems = tenant_problems(plan)
        if problems:
            raise UsageError(
                f"--tenant {tenant}: " + "; ".join(problems) + ". Nothing was applied; run without --tenant, "
                "or give the job a tenant_column (and :tenant in its update statement)"
            )
    for where, sql in _fragment_statements(plan):
        problem = sqlsplit.parse_error(sql, dialect)
        if problem is not None:
            name = "PostgreSQL" if dialect == "postgresql" else "SQLite"
            raise DatabaseError(
                f"{where} does not parse as {name}: {problem}; nothing was applied ({printable(sql[:200])})"
            )
    for step in plan.steps:
        if step.kind == "seed":
            _check_seed(step)
        if step.kind != "migration":
            continue
        for role in ("up", "verify"):
            path = step.files.get(role)
            if path is not None:
                where = f"migration {step.id}: {step.migration.files[_name(step, role)].path}"
                sqlsplit.split_script(_text(path, where), dialect, where=where)


def _backfill_statements(job: BackfillJob) -> list[tuple[str, str]]:
    """The SQL fragments of a job (predicate, set expressions, update statement) in statements of its shape."""
    tenant = f" AND {job.tenant_column} = :tenant" if job.tenant_column else ""
    found = [
        (
            "table, key, tenant_column and predicate",
            f"SELECT {job.key} FROM {job.table} WHERE ({job.predicate}){tenant} AND {job.key} > :cursor "
            f"ORDER BY {job.key} LIMIT 1",
        )
    ]
    if job.set:
        assignments = ", ".join(f"{column} = {expression}" for column, expression in job.set)
        found.append(
            ("set", f"UPDATE {job.table} SET {assignments} WHERE {job.key} >= :lo AND {job.key} <= :hi{tenant}")
        )
    if job.update is not None:
        found.append(("update", job.update))
    return found


def _fragment_statements(plan: Plan) -> Iterator[tuple[str, str]]:
    """(where, statement) for every statement kit composes from a kit's SQL fragments and names."""
    for step in plan.steps:
        if step.kind != "backfill":
            continue
        job = step.backfill
        for field_name, statement in _backfill_statements(job):
            yield f"backfill {step.id}: {field_name}", statement
        for which, job_checks in (("pre_checks", job.pre_checks), ("post_checks", job.post_checks)):
            for check in job_checks:
                if (sql := check_sql(check)) is not None:
                    yield f"backfill {step.id}: {which} {check.id} ({check.kind})", sql
    for check in plan.checks:
        if (sql := check_sql(check)) is not None:
            yield f"check {check.id} ({check.kind})", sql


def validate_reverts(steps: list[Step], *, dialect: str) -> None:
    """Before a rollback's first statement: every revert script it will run parses (DatabaseError naming the line)."""
    for step in steps:
        if step.kind == "migration" and "revert" in step.files:
            where = f"migration {step.id}: {step.migration.files[_name(step, 'revert')].path}"
            sqlsplit.split_script(_text(step.files["revert"], where), dialect, where=where)


def seed_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of one seed file (.csv with a header, or one JSON object per line); FormatError naming the line.

    The one reader of seed files: `validate_plan` streams every file through it before the run's first
    statement, and the seed step loads them with it.
    """
    try:
        with path.open("r", encoding="utf-8", newline="") as handle:
            if path.suffix == ".csv":
                reader = csv.reader(handle)
                header = next(reader, None)
                if header is None:
                    return
                _seed_columns(path.name, 1, header)
                for row in reader:
                    if not row:
                        continue
                    if len(row) != len(header):
                        # csv.DictReader would file extra fields under None and fill missing ones with None.
                        raise FormatError(
                            f"{path.name}:{reader.line_num}: {len(row)} fields where the header names {len(header)}"
                        )
                    yield dict(zip(header, row, strict=True))
                return
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except (ValueError, RecursionError) as exc:  # a line nested past the recursion limit too
                    raise FormatError(f"{path.name}:{number}: not a JSON object ({exc})") from exc
                if not isinstance(row, dict):
                    raise FormatError(f"{path.name}:{number}: expected a JSON object per line")
                _seed_columns(path.name, number, list(row))
                yield {k: (json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else v) for k, v in row.items()}
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path.name}: not UTF-8 text ({exc.reason})") from exc
    except csv.Error as exc:
        raise FormatError(f"{path.name}: not valid CSV ({exc})") from exc


def _seed_columns(name: str, line: int, columns: list[str]) -> None:
    """Seed columns become identifiers in the INSERT (they cannot be bound as parameters): names only, once each."""
    for column in columns:
        if not IDENTIFIER.fullmatch(column):
            raise FormatError(
                f'{name}:{line}: column "{printable(column[:60])}" is not a column name ({IDENTIFIER.pattern}); '
                "seed columns are written into the INSERT statement"
            )
    if len(set(columns)) != len(columns):
        raise FormatError(f"{name}:{line}: a column is named twice")


def _check_seed(step: Step) -> None:
    keys = step.seed.options.key
    for name, path in step.files.items():
        try:
            for number, row in enumerate(seed_rows(path), start=1):
                missing = [k for k in keys if row.get(k) is None]
                if missing:
                    raise FormatError(f"{name}: row {number} has no value for key column(s) {', '.join(missing)}")
        except FormatError as exc:
            raise FormatError(f"seed {step.id}: {exc}") from exc


def _text(path: Path, where: str) -> str:
    try:
        return path.read_text("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def _name(step: Step, role: str) -> str:
    job = step.migration
    name = {"up": job.up, "verify": job.verify, "revert": job.revert}[role]
    assert name is not None
    return name

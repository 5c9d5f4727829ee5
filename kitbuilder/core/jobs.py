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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from kitbuilder.core.backfilljob import METRIC as METRIC
from kitbuilder.core.backfilljob import PARAMETER as PARAMETER
from kitbuilder.core.backfilljob import BackfillJob as BackfillJob
from kitbuilder.core.backfilljob import load_backfill_job as load_backfill_job
from kitbuilder.core.backfilljob import named_parameters as named_parameters
from kitbuilder.core.fields import IDENTIFIER as IDENTIFIER
from kitbuilder.core.fields import PHASE as PHASE
from kitbuilder.core.fields import TABLE as TABLE
from kitbuilder.core.fields import show
from kitbuilder.core.filelist import FileTable
from kitbuilder.core.kitchecks import CHECK_KINDS as CHECK_KINDS
from kitbuilder.core.kitchecks import Check as Check
from kitbuilder.core.kitchecks import CountCheck as CountCheck
from kitbuilder.core.kitchecks import Expect as Expect
from kitbuilder.core.kitchecks import ForeignKeyCheck as ForeignKeyCheck
from kitbuilder.core.kitchecks import SqlCheck as SqlCheck
from kitbuilder.core.kitchecks import SqliteForeignKeyCheck as SqliteForeignKeyCheck
from kitbuilder.core.kitchecks import UniqueCheck as UniqueCheck
from kitbuilder.core.kitchecks import parse_check as parse_check
from kitbuilder.core.kitchecks import parse_checks as parse_checks
from kitbuilder.core.manifest import Component, FileEntry, Manifest
from kitbuilder.core.manifest_parts import COMPONENT_FILE as COMPONENT_FILE
from kitbuilder.core.manifest_parts import ComponentOptions
from kitbuilder.core.manifest_parts import MigrationOptions as MigrationOptions
from kitbuilder.core.manifest_parts import SeedOptions as SeedOptions
from kitbuilder.errors import FormatError

SEED_SUFFIXES = (".ndjson", ".jsonl", ".csv")
APPLY_ROLES = ("migration", "seed", "backfill")


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
    raw_options: ComponentOptions = field(default_factory=ComponentOptions)  # as signed, for the step checksum


@dataclass(frozen=True)
class SeedJob:
    kind: ClassVar[str] = "seed"
    id: str
    phase: str | None
    options: SeedOptions
    data: tuple[str, ...]  # the .ndjson/.jsonl/.csv files, loaded in this order
    files: Mapping[str, FileEntry]
    raw_options: ComponentOptions = field(default_factory=ComponentOptions)  # as signed, for the step checksum


@dataclass(frozen=True)
class BackfillComponent:
    kind: ClassVar[str] = "backfill"
    id: str
    phase: str | None
    job_file: str
    job: BackfillJob
    files: Mapping[str, FileEntry]
    raw_options: ComponentOptions = field(default_factory=ComponentOptions)  # as signed, for the step checksum


Job = MigrationJob | SeedJob | BackfillComponent


def component_files(manifest: Manifest, component_id: str) -> dict[str, FileEntry]:
    """A component's files by their name relative to the component's common directory."""
    entries = _entries_of(manifest.files, component_id)
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


def _entries_of(files: Sequence[FileEntry], component_id: str) -> list[FileEntry]:
    """The component's entries, in order. From a file table, made for its runs of that component only (found at C
    speed): verify parses the apply jobs of a kit of many files without an object per file of other components."""
    if not isinstance(files, FileTable):
        return [f for f in files if f.component == component_id]
    entries: list[FileEntry] = []
    start = 0
    for _, component, count, _ in files.kind_totals():
        if component == component_id:
            entries.extend(files[start : start + count])
        start += count
    return entries


def _job(manifest: Manifest, position: int, read: Callable[[FileEntry], bytes]) -> Job | None:
    component = manifest.components[position]
    if component.role not in APPLY_ROLES:
        # No other role has options (kit build writes none): Manifest.from_json refused any it had.
        return None
    where = f"{manifest_where(position)} ({component.role} {component.id})"
    if component.phase is not None and not PHASE.fullmatch(component.phase):
        raise FormatError(f"{where}: phase: {show(component.phase)} does not match {PHASE.pattern}")
    if component.subject is not None:
        raise FormatError(f"{where}: subject: only sbom components describe a subject")
    files = component_files(manifest, component.id)
    if component.role == "migration":
        return _migration_job(component, files, where)
    if component.role == "seed":
        return _seed_job(component, files, where)
    return _backfill_component(component, files, where, read)


def _migration_job(component: Component, files: dict[str, FileEntry], where: str) -> MigrationJob:
    options_where = f"{where}: options"
    options = component.options.migration()

    def named(role: str, given: str | None, default: str) -> str | None:
        name = given or default
        if name in files:
            return name
        if given is not None or role == "up":
            raise FormatError(f"{options_where}.{role}: the component has no file {show(name)}")
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


def _seed_job(component: Component, files: dict[str, FileEntry], where: str) -> SeedJob:
    seed = component.options.seed()
    data = tuple(sorted(name for name in files if name.endswith(SEED_SUFFIXES)))
    if not data:
        raise FormatError(f"{where}: no {'/'.join(SEED_SUFFIXES)} file to load")
    return SeedJob(
        id=component.id, phase=component.phase, options=seed, data=data, files=files, raw_options=component.options
    )


def _backfill_component(
    component: Component, files: dict[str, FileEntry], where: str, read: Callable[[FileEntry], bytes]
) -> BackfillComponent:
    # A backfill's options live in its job file: Manifest.from_json refused any in the manifest.
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
                raise FormatError(f"manifest components: id {show(job_id)} is used twice")
        checks = manifest.checks  # parsed (and ids checked unique) by Manifest.from_json
        phases = {job.phase for job in jobs if job.phase is not None}
        for number, check in enumerate(checks):
            if check.phase is not None and check.phase not in phases:
                raise FormatError(
                    f"manifest checks[{number}] ({check.id}): phase: {show(check.phase)} is not a phase of this kit "
                    f"({', '.join(sorted(phases)) or 'none'}); the check would never run where it says"
                )
        return cls(jobs=jobs, checks=checks)

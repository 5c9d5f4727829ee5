"""Kit specs: the declarative YAML a release pipeline hands to ``kit build``.

Loading keeps the YAML line of every field so an error can say
``manifests/x.yaml:14: migrations[1].phase: ...``. The schema in
``schemas/kit-spec.schema.json`` is the contract; this module adds what a
schema cannot say (paths exist, no two files land on one kit path).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kitbuilder.core import jobs, paths, schemas, timefmt
from kitbuilder.core.yamllines import field_name, load_with_lines
from kitbuilder.errors import FormatError, SpecError

# Spec section → (role recorded in the manifest, directory inside the kit).
SECTIONS: dict[str, tuple[str, str]] = {
    "migrations": ("migration", "migrations"),
    "backfills": ("backfill", "backfills"),
    "seeds": ("seed", "seeds"),
    "sboms": ("sbom", "sbom"),
    "docs": ("doc", "docs"),
}


@dataclass(frozen=True)
class ComponentSpec:
    """One entry of a spec section: a file or directory that goes into the kit under ``dest``."""

    role: str
    id: str
    source: Path
    dest: str
    phase: str | None = None
    subject: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageSpec:
    """One container image the kit carries; stored under images/ as part of one OCI image layout."""

    ref: str
    source: Path
    format: str = "auto"  # auto | oci-layout | oci-archive | docker-archive
    platform: str | None = None  # os/arch[/variant]: keep only this platform of an index
    source_ref: str | None = None  # which image of a multi-image source
    line: int = 0  # spec line, for messages

    def where(self, spec_path: Path, number: int) -> str:
        return f"{spec_path}:{self.line}: images[{number}]"


@dataclass(frozen=True)
class KitSpec:
    path: Path
    name: str
    version: str
    sequence: int
    expires: datetime
    product: str
    channel: str
    description: str
    components: tuple[ComponentSpec, ...]
    checks: tuple[dict[str, Any], ...]
    raw: dict[str, Any]
    images: tuple[ImageSpec, ...] = ()


def load_spec(spec_path: Path) -> KitSpec:
    """Read and check a kit spec; raise SpecError naming file, line and field."""
    where = str(spec_path)
    try:
        text = spec_path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{where}: cannot read spec ({exc})") from exc
    document, lines = load_with_lines(text, where)

    def fail(location: tuple[Any, ...], message: str) -> SpecError:
        probe = location
        while probe not in lines and probe:
            probe = probe[:-1]
        return SpecError(f"{where}:{lines.get(probe, 1)}: {field_name(location)}: {message}")

    error = schemas.first_error("kit-spec", document)
    if error is not None:
        location = tuple(error.absolute_path)
        message = error.message
        if error.validator == "additionalProperties":
            message += " (see schemas/kit-spec.schema.json for the allowed fields)"
        raise fail(location, message)
    assert isinstance(document, dict)

    try:
        expires = timefmt.parse_utc(document["expires"])
    except ValueError as exc:
        raise fail(("expires",), f"expected an RFC 3339 UTC time such as 2027-06-30T00:00:00Z ({exc})") from exc

    base = spec_path.parent
    components: list[ComponentSpec] = []
    seen_ids: dict[str, tuple[Any, ...]] = {}
    for section, (role, kit_dir) in SECTIONS.items():
        for number, entry in enumerate(document.get(section, [])):
            location = (section, number)
            component_id = entry["id"]
            if component_id in seen_ids:
                raise fail(
                    (*location, "id"), f"id {component_id!r} is already used at {field_name(seen_ids[component_id])}"
                )
            seen_ids[component_id] = location
            source = (base / entry["source"]).resolve()
            if not source.exists():
                raise fail(
                    (*location, "source"), f"{entry['source']} does not exist (paths are relative to the spec file)"
                )
            if not (source.is_file() or source.is_dir()):
                raise fail((*location, "source"), f"{entry['source']} is neither a regular file nor a directory")
            dest = entry.get("dest", f"{kit_dir}/{component_id}")
            problem = paths.problem_with(dest)
            if problem:
                raise fail((*location, "dest"), f"{dest!r}: {problem}")
            known = {"id", "source", "dest", "phase", "subject"}
            components.append(
                ComponentSpec(
                    role=role,
                    id=component_id,
                    source=source,
                    dest=dest,
                    phase=entry.get("phase"),
                    subject=entry.get("subject"),
                    options={k: v for k, v in entry.items() if k not in known},
                )
            )
    images: list[ImageSpec] = []
    seen_refs: dict[str, int] = {}
    for number, entry in enumerate(document.get("images", [])):
        location = ("images", number)
        if entry["ref"] in seen_refs:
            raise fail((*location, "ref"), f"{entry['ref']!r} is already used by images[{seen_refs[entry['ref']]}]")
        seen_refs[entry["ref"]] = number
        source = (base / entry["source"]).resolve()
        if not source.exists():
            raise fail((*location, "source"), f"{entry['source']} does not exist (paths are relative to the spec file)")
        images.append(
            ImageSpec(
                ref=entry["ref"],
                source=source,
                format=entry.get("format", "auto"),
                platform=entry.get("platform"),
                source_ref=entry.get("sourceRef"),
                line=lines.get(location, 1),
            )
        )
    if not components and not images:
        raise fail((), "the spec lists no components; add at least one of " + ", ".join([*SECTIONS, "images"]))
    check_ids: set[str] = set()
    phases = {c.phase for c in components if c.phase is not None and c.role in jobs.APPLY_ROLES}
    for number, check in enumerate(document.get("checks", [])):
        if check["id"] in check_ids:
            raise fail(("checks", number, "id"), f"check id {check['id']!r} is used twice")
        check_ids.add(check["id"])
        # The schema allows every field on every kind; apply honours only the kind's own, so refuse the rest here.
        try:
            jobs.parse_check(check, "check")
        except FormatError as exc:
            raise fail(("checks", number), str(exc)) from exc
        if check.get("phase") is not None and check["phase"] not in phases:
            raise fail(
                ("checks", number, "phase"),
                f"{check['phase']!r} is not a phase of a migration, seed or backfill of this spec "
                f"({', '.join(sorted(phases)) or 'none'})",
            )
    for component in components:
        if component.role not in jobs.APPLY_ROLES:
            continue
        section = f"{component.role}s"
        number = [x.id for x in components if x.role == component.role].index(component.id)

        def at(name: str, message: str, location: tuple[Any, ...] = (section, number)) -> SpecError:
            return fail((*location, name), message)

        if component.role == "backfill":
            _check_backfill_job(component, at)
        elif component.role == "migration":
            _check_migration_files(component, at)
        elif not any(
            p.suffix in jobs.SEED_SUFFIXES
            for p in ([component.source] if component.source.is_file() else component.source.rglob("*"))
        ):
            raise at("source", f"seed {component.id}: no {'/'.join(jobs.SEED_SUFFIXES)} file to load")
    return KitSpec(
        path=spec_path,
        name=document["name"],
        version=document["version"],
        sequence=document["sequence"],
        expires=expires,
        product=document["product"],
        channel=document.get("channel", "stable"),
        description=document.get("description", ""),
        components=tuple(components),
        checks=tuple(document.get("checks", [])),
        raw=document,
        images=tuple(images),
    )


NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")


def backfill_job_path(component: ComponentSpec) -> Path:
    """The job YAML of a backfill component: its source file, or job.yaml in its source directory."""
    return component.source if component.source.is_file() else component.source / "job.yaml"


def load_backfill_job(text: str, where: str) -> jobs.BackfillJob:
    """Parse and check a backfill job; SpecError names the file, line and field."""
    return jobs.load_backfill_job(text, where, error=SpecError)


def _check_backfill_job(component: ComponentSpec, fail: Any) -> None:
    job = backfill_job_path(component)
    if not job.is_file():
        raise fail(
            "source", f"backfill {component.id}: {job} not found (a job YAML file, or a directory with job.yaml)"
        )
    load_backfill_job(job.read_text("utf-8"), str(job))


def _check_migration_files(component: ComponentSpec, fail: Any) -> None:
    """The files a migration names (or the defaults apply looks for) exist in its source directory."""
    options = jobs.MigrationOptions.from_json(component.options, f"migration {component.id}")
    if not component.source.is_dir():
        raise fail("source", f"migration {component.id}: expected a directory holding {options.up}")
    for option, name, required in (
        ("up", options.up, True),
        ("verify", options.verify, options.verify is not None),
        ("revert", options.revert, options.revert is not None),
    ):
        if required and not (component.source / str(name)).is_file():
            raise fail(option, f"migration {component.id}: {component.source / str(name)} not found")
    has_verify = (component.source / (options.verify or "verify.sql")).is_file()
    if not options.transactional and not options.idempotent and not has_verify:
        raise fail(
            "transactional",
            f"migration {component.id}: transactional: false needs idempotent: true or a verify script, "
            "so a crash can be resolved",
        )

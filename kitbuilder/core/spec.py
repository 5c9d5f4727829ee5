"""Kit specs: the declarative YAML a release pipeline hands to ``kit build``.

Parsing keeps the YAML line of every field so an error can say
``manifests/x.yaml:14: migrations[1].phase: ...``. The schema in
``schemas/kit-spec.schema.json`` is the contract; this module adds what a
schema cannot say (no two components share an id or a kit path, checks name
real phases, a migration names its files, a seed has data).

Pure: the spec comes in as the bytes read once (ops/specfile reads them, hashes
them through this parse, and lists the sources); what the source directories hold
comes in as ``SourceListing`` values, so nothing here touches the filesystem.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from kitbuilder.core import jobs, paths, schemas, timefmt
from kitbuilder.core.manifest_parts import ComponentOptions
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
_COMPONENT_FIELDS = frozenset({"id", "source", "dest", "phase", "subject"})

Location = tuple[Any, ...]


@dataclass(frozen=True)
class ComponentSpec:
    """One entry of a spec section: a file or directory that goes into the kit under ``dest``."""

    role: str
    id: str
    source: Path
    dest: str
    phase: str | None = None
    subject: str | None = None
    # As the manifest signs them, read strictly for the role (a field the role would not honour is a SpecError).
    options: ComponentOptions = field(default_factory=ComponentOptions)
    # Where the entry is in the spec: ("migrations", 0).
    location: Location = ()
    # ``source`` as the spec spells it, for messages.
    source_text: str = ""


@dataclass(frozen=True)
class ImageSpec:
    """One container image the kit carries; stored under images/ as part of one OCI image layout."""

    ref: str
    source: Path
    format: str = "auto"  # auto | oci-layout | oci-archive | docker-archive
    platform: str | None = None  # os/arch[/variant]: keep only this platform of an index
    source_ref: str | None = None  # which image of a multi-image source
    line: int = 0  # spec line, for messages
    source_text: str = ""  # ``source`` as the spec spells it, for messages

    def where(self, spec_path: Path, number: int) -> str:
        return f"{spec_path}:{self.line}: images[{number}]"


@dataclass(frozen=True)
class SourceListing:
    """What one component's source is on disk: a directory (and the regular files under it, relative
    POSIX names) or a regular file (``files`` holds its name)."""

    is_dir: bool
    files: frozenset[str]


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
    # The spec's checks, typed; the manifest signs their ``to_json`` (the same JSON as written).
    checks: tuple[jobs.Check, ...]
    images: tuple[ImageSpec, ...] = ()
    # SHA-256 of the spec bytes parsed, which the provenance records.
    sha256: str = ""
    lines: Mapping[Location, int] = field(default_factory=dict, repr=False, compare=False)

    def error(self, location: Location, message: str) -> SpecError:
        """A SpecError naming the spec file, the line of ``location`` (or its nearest parent) and the field."""
        probe = location
        while probe not in self.lines and probe:
            probe = probe[:-1]
        return SpecError(f"{self.path}:{self.lines.get(probe, 1)}: {field_name(location)}: {message}")


def parse_spec(data: bytes, *, path: Path) -> KitSpec:
    """The spec in ``data`` (read from ``path``); SpecError naming file, line and field.

    Source paths are joined to the spec's directory, not resolved: ops/specfile checks them on disk.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{path}: cannot read spec ({exc})") from exc
    document, lines = load_with_lines(text, str(path))
    # A spec with only the lines, for errors before the rest is known.
    located = KitSpec(path, "", "", 0, datetime.min, "", "", "", (), (), lines=lines)
    error = schemas.first_error("kit-spec", document)
    if error is not None:
        message = error.message
        if error.validator == "additionalProperties":
            message += " (see schemas/kit-spec.schema.json for the allowed fields)"
        raise located.error(tuple(error.absolute_path), message)
    assert isinstance(document, dict)
    try:
        expires = timefmt.parse_utc(document["expires"])
    except ValueError as exc:
        raise located.error(
            ("expires",), f"expected an RFC 3339 UTC time such as 2027-06-30T00:00:00Z ({exc})"
        ) from exc
    components = _components(document, path.parent, located.error)
    images = _images(document, path.parent, located.error, lines)
    if not components and not images:
        raise located.error((), "the spec lists no components; add at least one of " + ", ".join([*SECTIONS, "images"]))
    checks = _checks(document, components, located.error)
    return KitSpec(
        path=path,
        name=document["name"],
        version=document["version"],
        sequence=document["sequence"],
        expires=expires,
        product=document["product"],
        channel=document.get("channel", "stable"),
        description=document.get("description", ""),
        components=components,
        images=images,
        checks=checks,
        sha256=hashlib.sha256(data).hexdigest(),
        lines=lines,
    )


Fail = Callable[[Location, str], SpecError]


def _components(document: dict[str, Any], base: Path, fail: Fail) -> tuple[ComponentSpec, ...]:
    components: list[ComponentSpec] = []
    seen_ids: dict[str, Location] = {}
    for section, (role, kit_dir) in SECTIONS.items():
        for number, entry in enumerate(document.get(section, [])):
            location = (section, number)
            component_id = entry["id"]
            if component_id in seen_ids:
                raise fail(
                    (*location, "id"), f"id {component_id!r} is already used at {field_name(seen_ids[component_id])}"
                )
            seen_ids[component_id] = location
            dest = entry.get("dest", f"{kit_dir}/{component_id}")
            problem = paths.problem_with(dest)
            if problem:
                raise fail((*location, "dest"), f"{dest!r}: {problem}")
            written = {k: v for k, v in entry.items() if k not in _COMPONENT_FIELDS}
            try:
                options = ComponentOptions.from_json(written, role=role, where=f"{role} {component_id}: options")
            except FormatError as exc:
                raise fail(location, exc.message) from exc
            component = ComponentSpec(
                role=role,
                id=component_id,
                source=base / entry["source"],
                dest=dest,
                phase=entry.get("phase"),
                subject=entry.get("subject"),
                options=options,
                location=location,
                source_text=entry["source"],
            )
            components.append(component)
    return tuple(components)


def _images(document: dict[str, Any], base: Path, fail: Fail, lines: Mapping[Location, int]) -> tuple[ImageSpec, ...]:
    images: list[ImageSpec] = []
    seen_refs: dict[str, int] = {}
    for number, entry in enumerate(document.get("images", [])):
        location = ("images", number)
        if entry["ref"] in seen_refs:
            raise fail((*location, "ref"), f"{entry['ref']!r} is already used by images[{seen_refs[entry['ref']]}]")
        seen_refs[entry["ref"]] = number
        images.append(
            ImageSpec(
                ref=entry["ref"],
                source=base / entry["source"],
                format=entry.get("format", "auto"),
                platform=entry.get("platform"),
                source_ref=entry.get("sourceRef"),
                line=lines.get(location, 1),
                source_text=entry["source"],
            )
        )
    return tuple(images)


def _checks(document: dict[str, Any], components: tuple[ComponentSpec, ...], fail: Fail) -> tuple[jobs.Check, ...]:
    checks: list[jobs.Check] = []
    phases = {c.phase for c in components if c.phase is not None and c.role in jobs.APPLY_ROLES}
    for number, entry in enumerate(document.get("checks", [])):
        # The schema allows every field on every kind; apply honours only the kind's own, so refuse the rest here.
        try:
            check = jobs.parse_check(entry, "check")
        except FormatError as exc:
            raise fail(("checks", number), str(exc)) from exc
        if any(c.id == check.id for c in checks):
            raise fail(("checks", number, "id"), f"check id {check.id!r} is used twice")
        if check.phase is not None and check.phase not in phases:
            raise fail(
                ("checks", number, "phase"),
                f"{check.phase!r} is not a phase of a migration, seed or backfill of this spec "
                f"({', '.join(sorted(phases)) or 'none'})",
            )
        checks.append(check)
    return tuple(checks)


NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]*")


def backfill_job_path(component: ComponentSpec, listing: SourceListing) -> Path:
    """The job YAML of a backfill component: its source file, or job.yaml in its source directory."""
    return component.source / "job.yaml" if listing.is_dir else component.source


def load_backfill_job(data: bytes | str, where: str) -> jobs.BackfillJob:
    """Parse and check a backfill job; SpecError names the file, line and field."""
    return jobs.load_backfill_job(data, where, error=SpecError)


def check_sources(spec: KitSpec, listings: Mapping[str, SourceListing], read_job: Callable[[Path], bytes]) -> None:
    """What a migration, seed or backfill needs is in its source, by ``listings`` (component id → listing).

    ``read_job`` returns the bytes of a backfill's job file. SpecError names the spec line and field.
    """
    for component in spec.components:
        if component.role not in jobs.APPLY_ROLES:
            continue
        listing = listings[component.id]

        def at(name: str, message: str, location: Location = component.location) -> SpecError:
            return spec.error((*location, name), message)

        if component.role == "backfill":
            job = backfill_job_path(component, listing)
            if listing.is_dir and "job.yaml" not in listing.files:
                raise at(
                    "source",
                    f"backfill {component.id}: {job} not found (a job YAML file, or a directory with job.yaml)",
                )
            load_backfill_job(read_job(job), str(job))
        elif component.role == "migration":
            _check_migration_files(component, listing, at)
        elif not any(PurePosixPath(name).suffix in jobs.SEED_SUFFIXES for name in listing.files):
            raise at("source", f"seed {component.id}: no {'/'.join(jobs.SEED_SUFFIXES)} file to load")


def _check_migration_files(component: ComponentSpec, listing: SourceListing, fail: Any) -> None:
    """The files a migration names (or the defaults apply looks for) exist in its source directory."""
    options = component.options.migration()
    if not listing.is_dir:
        raise fail("source", f"migration {component.id}: expected a directory holding {options.up}")
    for option, name, required in (
        ("up", options.up, True),
        ("verify", options.verify, options.verify is not None),
        ("revert", options.revert, options.revert is not None),
    ):
        if required and str(name) not in listing.files:
            raise fail(option, f"migration {component.id}: {component.source / str(name)} not found")
    has_verify = (options.verify or "verify.sql") in listing.files
    if not options.transactional and not options.idempotent and not has_verify:
        raise fail(
            "transactional",
            f"migration {component.id}: transactional: false needs idempotent: true or a verify script, "
            "so a crash can be resolved",
        )

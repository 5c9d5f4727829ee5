"""The typed parts of a kit manifest: its ``build`` and ``delta`` blocks, ``sboms[]``, each component's ``options``
and (format 2) each component's signed payload totals.

Each model reads its (schema-checked) JSON strictly with ``from_json`` (a FormatError names the
field) and writes it back with ``to_json``; a field the JSON did not have stays absent (None), so
``to_json(from_json(x)) == x`` and a re-signed manifest (a delta's) says what the original said.
The other parts have their own modules: ``images[]`` is core/images.py ``ImageRecord``, ``checks[]``
core/kitchecks.py ``Check``. Pure: no I/O, and no SBOM code (core/sbom imports the manifest).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby
from operator import attrgetter
from typing import TYPE_CHECKING

from kitbuilder.core.fields import IDENTIFIER, INT64_MAX, TABLE, Fields, integer, show, type_name
from kitbuilder.core.filelist import FileTable
from kitbuilder.errors import FormatError, IntegrityError

if TYPE_CHECKING:
    from kitbuilder.core.filelist import FileEntry

# A file name relative to its component's directory (the manifest's path rule, one level or more).
COMPONENT_FILE = re.compile(r"(?!\.{1,2}(/|$))(?!.*/\.{1,2}(/|$))[A-Za-z0-9._+@=,-]+(/[A-Za-z0-9._+@=,-]+)*")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_DELTA_FRAMES = re.compile(r"content|verbatim")
# A file role, as the file list's line grammar admits it (core/filelist.py).
_FILE_ROLE = re.compile(r"[a-z][a-z0-9-]{0,63}")
_SAFE_INTEGER = (1 << 53) - 1
SBOM_FORMATS = ("CycloneDX", "SPDX")


# build --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Compression:
    """``build.compression``: zstd at ``level``; format 1 also said whether it compressed multithreaded."""

    level: int
    algorithm: str = "zstd"
    multithreaded: bool | None = None  # format 1 only

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"algorithm": self.algorithm, "level": self.level}
        if self.multithreaded is not None:
            data["multithreaded"] = self.multithreaded
        return data

    @classmethod
    def from_json(cls, document: object, *, what: str = "manifest.json: build.compression") -> Compression:
        read = Fields(document, what)
        algorithm = read.required_text("algorithm")
        if algorithm != "zstd":
            raise read.fail("algorithm", f"{show(algorithm)} is not zstd")
        level = integer(read.get("level", True), 1, 19, lambda message: read.fail("level", message))
        multithreaded = _optional_flag(read, "multithreaded")
        read.finish()
        return cls(level=level, algorithm=algorithm, multithreaded=multithreaded)


@dataclass(frozen=True)
class BuildInfo:
    """``build``: the tool, the compression, the mtime of every tar header (format 1) and the key id that
    made SHA256SUMS.sig (signed, so a junk signature put first cannot pick another key; absent in old kits)."""

    tool: str
    compression: Compression
    mtime: int | None = None
    checksum_key_id: str | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"tool": self.tool, "compression": self.compression.to_json()}
        if self.mtime is not None:
            data["mtime"] = self.mtime
        if self.checksum_key_id is not None:
            data["checksumKeyId"] = self.checksum_key_id
        return data

    @classmethod
    def from_json(cls, document: object, *, what: str = "manifest.json: build") -> BuildInfo:
        read = Fields(document, what)
        tool = read.required_text("tool")
        compression = Compression.from_json(read.get("compression", True), what=f"{what}.compression")
        mtime_value = read.get("mtime", False)
        mtime = (
            None if "mtime" not in read.data else integer(mtime_value, 0, INT64_MAX, lambda m: read.fail("mtime", m))
        )
        key_id = read.text("checksumKeyId", nonempty=True)
        read.finish()
        return cls(tool=tool, compression=compression, mtime=mtime, checksum_key_id=key_id)


# delta --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeltaInfo:
    """``delta`` (delta kits only): the one base it applies to (its manifest digest), the paths it removes and
    the digest of the target manifest it carries under delta/target/."""

    base_manifest_sha256: str
    base_sequence: int
    base_version: str
    removed: tuple[str, ...] | None = None
    target_manifest_sha256: str | None = None
    # How the delta carries changed small files (docs/delta.md): "content" (per-file content deltas; kit patch
    # rebuilds their group frames) or "verbatim" (the target's frames as they are). Absent: verbatim.
    frames: str | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {
            "baseManifestSha256": self.base_manifest_sha256,
            "baseSequence": self.base_sequence,
            "baseVersion": self.base_version,
        }
        if self.removed is not None:
            data["removed"] = list(self.removed)
        if self.target_manifest_sha256 is not None:
            data["targetManifestSha256"] = self.target_manifest_sha256
        if self.frames is not None:
            data["frames"] = self.frames
        return data

    @classmethod
    def from_json(cls, document: object, *, what: str = "manifest.json: delta") -> DeltaInfo:
        read = Fields(document, what)
        base = read.required_text("baseManifestSha256", pattern=_SHA256)
        sequence = integer(
            read.get("baseSequence", True), -INT64_MAX, INT64_MAX, lambda m: read.fail("baseSequence", m)
        )
        version = read.required_text("baseVersion")
        removed_value = read.get("removed", False)
        removed: tuple[str, ...] | None = None
        if "removed" in read.data:
            if not isinstance(removed_value, list) or not all(isinstance(p, str) for p in removed_value):
                raise read.fail("removed", f"expected a list of paths, got {type_name(removed_value)}")
            removed = tuple(removed_value)
        target = read.text("targetManifestSha256", pattern=_SHA256)
        frames = read.text("frames", pattern=_DELTA_FRAMES)
        read.finish()
        return cls(base, sequence, version, removed, target, frames)


# sboms[] ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShippedSbom:
    """A component SBOM the kit ships, as manifest.json ``sboms[]`` records it (schemas/manifest.schema.json)."""

    path: str
    component: str
    subject: str
    format: str  # "CycloneDX" | "SPDX"
    spec_version: str  # "1.6", "2.3", ...

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "component": self.component,
            "subject": self.subject,
            "format": self.format,
            "specVersion": self.spec_version,
        }

    @classmethod
    def from_json(cls, document: Mapping[str, object], *, what: str = "manifest.json: sboms[]") -> ShippedSbom:
        """The record of a (schema-checked) ``sboms[]`` entry; FormatError naming the field if it is not one."""
        read = Fields(document, what)
        shipped = cls(
            path=read.required_text("path"),
            component=read.required_text("component"),
            subject=read.required_text("subject"),
            format=read.required_text("format"),
            spec_version=read.required_text("specVersion"),
        )
        read.finish()
        if shipped.format not in SBOM_FORMATS:
            raise read.fail("format", f"{show(shipped.format)} is not one of {', '.join(SBOM_FORMATS)}")
        return shipped


# component options --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MigrationOptions:
    """``up``/``verify``/``revert`` name files of the component; None = the default name, when present."""

    up: str = "up.sql"
    verify: str | None = None
    revert: str | None = None
    transactional: bool = True
    idempotent: bool = False

    @classmethod
    def from_json(cls, options: object, where: str) -> MigrationOptions:
        return ComponentOptions.from_json(options, role="migration", where=where).migration()


@dataclass(frozen=True)
class SeedOptions:
    table: str
    key: tuple[str, ...]

    @classmethod
    def from_json(cls, options: object, where: str) -> SeedOptions:
        return ComponentOptions.from_json(options, role="seed", where=where).seed()


@dataclass(frozen=True)
class ComponentOptions:
    """A component's ``options`` as signed, each field as written (None: absent), read strictly per role:
    a migration's up/verify/revert/transactional/idempotent, a seed's table and key, nothing for the others
    (a backfill's options live in its job file). ``migration()``/``seed()`` give what apply acts on."""

    up: str | None = None
    verify: str | None = None
    revert: str | None = None
    transactional: bool | None = None
    idempotent: bool | None = None
    table: str | None = None
    key: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {}
        for name in ("up", "verify", "revert", "transactional", "idempotent", "table"):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.key is not None:
            data["key"] = list(self.key)
        return data

    @classmethod
    def from_json(cls, options: object, *, role: str, where: str) -> ComponentOptions:
        """FormatError naming ``where`` and the field for a wrong type, a missing or an unknown field."""
        read = Fields(options, where)
        parsed = cls()
        if role == "migration":
            # The spec schema's defaults are written into the manifest (`verify: verify.sql` on every migration),
            # so a default name means "when present" (see ``migration``); any other name must be a file of it.
            verify = read.text("verify", pattern=COMPONENT_FILE)
            revert = read.text("revert", pattern=COMPONENT_FILE)
            parsed = cls(
                up=read.text("up", pattern=COMPONENT_FILE),
                verify=verify,
                revert=revert,
                transactional=_optional_flag(read, "transactional"),
                idempotent=_optional_flag(read, "idempotent"),
            )
        elif role == "seed":
            parsed = cls(
                table=read.required_text("table", pattern=TABLE),
                key=read.names("key", pattern=IDENTIFIER, required=True),
            )
        read.finish()
        return parsed

    def migration(self) -> MigrationOptions:
        return MigrationOptions(
            up=self.up or "up.sql",
            verify=None if self.verify == "verify.sql" else self.verify,
            revert=None if self.revert == "revert.sql" else self.revert,
            transactional=True if self.transactional is None else self.transactional,
            idempotent=bool(self.idempotent),
        )

    def seed(self) -> SeedOptions:
        if self.table is None or self.key is None:
            raise FormatError("seed options: table and key are required")  # from_json(role="seed") made sure
        return SeedOptions(table=self.table, key=self.key)


def _optional_flag(read: Fields, name: str) -> bool | None:
    """A boolean field that may be absent (None), kept apart from a written default."""
    if name not in read.data:
        read.read.append(name)
        return None
    return read.flag(name, False)


# component payload totals (format 2) --------------------------------------------------------------------------


@dataclass(frozen=True)
class PayloadTotals:
    """How many payload files, and how many bytes of content they hold."""

    files: int
    bytes: int

    def to_json(self) -> dict[str, object]:
        return {"bytes": self.bytes, "files": self.files}


@dataclass(frozen=True)
class ComponentPayload:
    """Format 2: a component's payload as manifest.json signs it (``files``, ``bytes``, ``byRole``): how many
    files of the file list name the component and their bytes, in all and by file role (a delta's ``kit-delta``
    holds ``delta-frame`` and ``delta-target`` files). ``kit inspect`` shows a kit from these without reading
    the file list; every reader of the list holds them to it (``check_component_payloads``)."""

    files: int
    bytes: int
    by_role: tuple[tuple[str, PayloadTotals], ...]  # sorted by role; the roles of no file are absent

    def to_json(self) -> dict[str, object]:
        return {
            "files": self.files,
            "bytes": self.bytes,
            "byRole": {role: totals.to_json() for role, totals in self.by_role},
        }

    @classmethod
    def from_json(cls, document: Mapping[str, object], *, what: str) -> ComponentPayload:
        """The totals of a (schema-checked) component; FormatError when ``byRole`` does not add up to them."""
        component = Fields(document, what)  # the component's other fields are read by its other parts
        files, size = _count(component, "files"), _count(component, "bytes")
        roles = component.get("byRole", True)
        if not isinstance(roles, dict):
            raise component.fail("byRole", f"expected a mapping, got {type_name(roles)}")
        by_role: list[tuple[str, PayloadTotals]] = []
        for role in sorted(roles):
            if _FILE_ROLE.fullmatch(role) is None:
                raise FormatError(f"{what}: byRole: {show(role)} is not a role name")
            read = Fields(roles[role], f"{what}: byRole.{role}")
            totals = PayloadTotals(files=_count(read, "files"), bytes=_count(read, "bytes"))
            read.finish()
            by_role.append((role, totals))
        payload = cls(files, size, tuple(by_role))
        role_files = sum(t.files for _, t in payload.by_role)
        role_bytes = sum(t.bytes for _, t in payload.by_role)
        if (role_files, role_bytes) != (files, size):
            raise FormatError(
                f"{what}: byRole adds up to {role_files} files and {role_bytes} bytes, but the component states "
                f"{files} files and {size} bytes"
            )
        return payload


def count_payloads(files: Iterable[FileEntry]) -> dict[str, ComponentPayload]:
    """Each component's totals (by component id) as ``files`` give them, in one pass over them."""
    counted: dict[str, dict[str, list[int]]] = {}
    # Files come in archive order, where a component's files (of one role) are runs: one step per run, not per file
    # (a parsed file list finds its runs in its columns, without an entry object per file).
    if isinstance(files, FileTable):
        runs = files.kind_totals()
    else:
        runs = []
        for (component, role), run in groupby(files, key=attrgetter("component", "role")):
            sizes = [entry.size for entry in run]
            runs.append((role, component, len(sizes), sum(sizes)))
    for role, component, count, size in runs:
        totals = counted.setdefault(component, {}).setdefault(role, [0, 0])
        totals[0] += count
        totals[1] += size
    payloads: dict[str, ComponentPayload] = {}
    for component, roles in counted.items():
        by_role = tuple((role, PayloadTotals(n, size)) for role, (n, size) in sorted(roles.items()))
        payloads[component] = ComponentPayload(
            files=sum(t.files for _, t in by_role), bytes=sum(t.bytes for _, t in by_role), by_role=by_role
        )
    return payloads


EMPTY_PAYLOAD = ComponentPayload(files=0, bytes=0, by_role=())


def check_component_payloads(
    stated: Sequence[tuple[str, ComponentPayload | None]],
    files: Iterable[FileEntry],
    *,
    what: str,
    signed_by: str = "manifest.json",
) -> None:
    """The totals ``signed_by`` states per component (id, payload) are exactly what the file list ``what`` holds.

    IntegrityError (exit 4) with one line naming the component and both numbers where they differ, or the
    first component the list names that ``signed_by`` does not list. Format 1 (payload None) states none.
    """
    counted = count_payloads(files)
    listed = {component for component, _ in stated}
    for component in counted:
        if component not in listed:
            raise IntegrityError(
                f"{what}: files of component {component!r}, which {signed_by} does not list; the kit was altered"
            )
    for component, payload in stated:
        if payload is None:
            continue
        observed = counted.get(component, EMPTY_PAYLOAD)
        for label, said, has in (
            ("files", payload.files, observed.files),
            ("bytes", payload.bytes, observed.bytes),
        ):
            if said != has:
                raise IntegrityError(
                    f"{signed_by}: component {component!r} states {said} {label}, {what} holds {has}; "
                    "the kit was altered"
                )
        if payload.by_role != observed.by_role:
            said_roles = ", ".join(f"{role} {t.files}/{t.bytes}" for role, t in payload.by_role) or "none"
            has_roles = ", ".join(f"{role} {t.files}/{t.bytes}" for role, t in observed.by_role) or "none"
            raise IntegrityError(
                f"{signed_by}: component {component!r} states files/bytes by role {said_roles}, {what} holds "
                f"{has_roles}; the kit was altered"
            )


def _count(read: Fields, name: str) -> int:
    """A required count (of files or bytes): an integer from 0 to 2^53-1."""
    return integer(read.get(name, True), 0, _SAFE_INTEGER, lambda message: read.fail(name, message))

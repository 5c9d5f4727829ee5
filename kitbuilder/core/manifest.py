"""The kit manifest: what a kit is and every payload file it carries.

``manifest.json`` is the pretty JSON form of ``Manifest.to_json()``; the same
object is the predicate of the signed in-toto statement in
``manifest.dsse.json``. Each file entry also records where the file lies in
the kit, which makes that part of the archive index signed: format 1 (read
only) lists the files inline, each with the file offset, length and data-frame
digest of its two frames; format 2 (``kitbuilder/v2``) lists the payload
``frames`` table (offset, length, decompressed size, digest of each payload
frame) and signs the file list ``manifest.files.jsonl`` by digest, size and
count (``fileList``, core/filelist.py), whose lines give per file the frame
holding its header (``frame``) and the header's offset in that frame (``at``).
So manifest.json grows with frames, not files. Format 2 also signs each component's payload
totals (``files``, ``bytes``, ``byRole``): what ``kit inspect`` shows without reading the list,
and what every reader of the list holds it to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kitbuilder.core import jsonio, schemas, timefmt
from kitbuilder.core.filelist import FILE_LIST, MAX_LINE_BYTES, FileListRef
from kitbuilder.core.filelist import FileEntry as FileEntry
from kitbuilder.core.images import ImageRecord
from kitbuilder.core.jsonio import ParseLimits
from kitbuilder.core.kitchecks import Check, parse_checks
from kitbuilder.core.manifest_parts import (
    BuildInfo,
    ComponentOptions,
    ComponentPayload,
    DeltaInfo,
    ShippedSbom,
    count_payloads,
)
from kitbuilder.core.metanames import ATTESTATION_NAME as _ATTESTATION_NAME
from kitbuilder.core.metanames import ATTESTATIONS_DIR as ATTESTATIONS_DIR
from kitbuilder.core.metanames import MANIFEST_DSSE as MANIFEST_DSSE
from kitbuilder.core.metanames import MANIFEST_JSON as MANIFEST_JSON
from kitbuilder.core.metanames import METADATA_FILES as METADATA_FILES
from kitbuilder.core.metanames import METADATA_FILES_V1 as METADATA_FILES_V1
from kitbuilder.core.metanames import SHA256SUMS as SHA256SUMS
from kitbuilder.core.metanames import SHA256SUMS_SIG as SHA256SUMS_SIG
from kitbuilder.core.metanames import SIGSTORE_BUNDLE as SIGSTORE_BUNDLE
from kitbuilder.core.metanames import is_metadata as is_metadata
from kitbuilder.core.metanames import is_optional_metadata as is_optional_metadata
from kitbuilder.errors import ArchiveError, FormatError

MANIFEST_API = "kitbuilder/v1"
MANIFEST_API_V2 = "kitbuilder/v2"
MAX_ATTESTATIONS = 16
# Payload members kit build generates itself; inputs cannot use these paths or component ids.
KIT_SBOM_COMPONENT = "kit-sbom"
IMAGES_COMPONENT = "kit-images"
IMAGES_DIR = "images"


def metadata_names(present: Iterable[str], format_version: int = 2) -> tuple[str, ...]:
    """The metadata members of a kit holding ``present`` (its member names), in archive order."""
    optional = [name for name in present if is_optional_metadata(name)]
    attestations = sorted(name for name in optional if name != SIGSTORE_BUNDLE)
    bundle = [SIGSTORE_BUNDLE] if SIGSTORE_BUNDLE in optional else []
    return (*(METADATA_FILES if format_version == 2 else METADATA_FILES_V1), *attestations, *bundle)


@dataclass(frozen=True)
class KitInfo:
    name: str
    version: str
    sequence: int
    expires: str
    product: str
    channel: str
    description: str = ""
    created: str | None = None

    @property
    def expires_at(self) -> datetime:
        return timefmt.parse_canonical(self.expires)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "sequence": self.sequence,
            "expires": self.expires,
            "product": self.product,
            "channel": self.channel,
            "description": self.description,
        }
        if self.created is not None:
            data["created"] = self.created
        return data


@dataclass(frozen=True)
class Component:
    id: str
    role: str
    phase: str | None = None
    subject: str | None = None
    options: ComponentOptions = field(default_factory=ComponentOptions)
    # Format 2: the component's files and bytes as signed (``Manifest.sealed_with`` counts them from the files);
    # None in format 1, which states none. Not part of equality: two components are the same component (kit
    # diff's "changed") by what they are, not by how many files they hold this time.
    payload: ComponentPayload | None = field(default=None, compare=False)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "role": self.role}
        if self.phase is not None:
            data["phase"] = self.phase
        if self.subject is not None:
            data["subject"] = self.subject
        if options := self.options.to_json():
            data["options"] = options
        if self.payload is not None:
            data.update(self.payload.to_json())
        return data


@dataclass(frozen=True)
class FrameEntry:
    """One zstd frame of a format-2 kit: file ``offset``, compressed ``length``, decompressed ``size``, and the
    SHA-256 of its compressed bytes (magic to checksum). The same record in the index and the signed manifest."""

    offset: int
    length: int
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"length": self.length, "offset": self.offset, "sha256": self.sha256, "size": self.size}

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> FrameEntry:
        return cls(item["offset"], item["length"], item["size"], item["sha256"])


@dataclass(frozen=True)
class Manifest:
    kit: KitInfo
    build: BuildInfo
    components: tuple[Component, ...]
    # A tuple as built; format 2 as read: the file list's compact ``FileTable`` (filelist.py), which hands out entries.
    files: Sequence[FileEntry]
    checks: tuple[Check, ...] = ()
    delta: DeltaInfo | None = None
    # Container images under images/ (one record per image) and the shipped SBOMs with what they describe.
    images: tuple[ImageRecord, ...] = ()
    sboms: tuple[ShippedSbom, ...] = ()
    # Format 2: the payload frames (every frame before the first metadata frame), as the index lists them.
    frames: tuple[FrameEntry, ...] = ()
    format_version: int = 1
    # Format 2: what manifest.json signs about manifest.files.jsonl. A manifest read from a kit has its files
    # only after that list was read and checked against this record (``with_files``); one being sealed has its
    # files, and ``seal`` sets this record from the list it writes.
    file_list: FileListRef | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "apiVersion": MANIFEST_API_V2 if self.format_version == 2 else MANIFEST_API,
            "kind": "KitManifest",
            "kit": self.kit.to_json(),
            "build": self.build.to_json(),
            "components": [c.to_json() for c in self.components],
        }
        if self.format_version == 2:
            if self.file_list is None or any(c.payload is None for c in self.components):
                raise ValueError("a format-2 manifest is written with its fileList and totals (ops.seal sets them)")
            data["fileList"] = self.file_list.to_json()
            data["frames"] = [f.to_json() for f in self.frames]
        else:
            data["files"] = [f.to_json() for f in self.files]
        if self.checks:
            data["checks"] = [c.to_json() for c in self.checks]
        if self.images:
            data["images"] = [i.to_json() for i in self.images]
        if self.sboms:
            data["sboms"] = [s.to_json() for s in self.sboms]
        if self.delta is not None:
            data["delta"] = self.delta.to_json()
        return data

    def to_bytes(self) -> bytes:
        return jsonio.dump_pretty(self.to_json())

    @property
    def payload_bytes(self) -> int:
        if self.file_list is not None:
            return self.file_list.payload_bytes
        return sum(f.size for f in self.files)

    @property
    def file_count(self) -> int:
        """How many payload files the kit has (format 2: the signed count, whether or not the list was read)."""
        return self.file_list.count if self.file_list is not None else len(self.files)

    def component_payloads(self) -> dict[str, ComponentPayload]:
        """Each component's payload totals by id: format 2 as signed (the file list need not be read), format 1
        counted from the files it lists inline."""
        if self.format_version == 2:
            return {c.id: c.payload for c in self.components if c.payload is not None}
        return count_payloads(self.files)

    def sealed_with(self, file_list: FileListRef) -> Manifest:
        """This format-2 manifest as sealed: with the ``fileList`` record of its list and each component's totals
        counted from its files (one pass), so what it signs about its files is made from them, never passed in."""
        counted = count_payloads(self.files)
        components = tuple(
            dataclasses.replace(c, payload=counted.get(c.id, ComponentPayload(files=0, bytes=0, by_role=())))
            for c in self.components
        )
        return dataclasses.replace(self, file_list=file_list, components=components)

    def with_files(self, files: Sequence[FileEntry]) -> Manifest:
        """This manifest with its payload files (format 2: read from the file list and checked by the caller)."""
        return dataclasses.replace(self, files=files)

    def by_path(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}

    @classmethod
    def from_json(cls, document: dict[str, Any], *, what: str = MANIFEST_JSON) -> Manifest:
        """Build from a parsed document; FormatError with the JSON path if it breaks the schema."""
        version = 2 if document.get("apiVersion") == MANIFEST_API_V2 else 1
        if version == 2 and "files" in document:
            raise FormatError(
                f"{what}: lists its files inline: a kit made by a development build of format 2, which kit no "
                "longer reads; rebuild the kit with this kitbuilder"
            )
        if version == 2 and _lacks_totals(document):
            raise FormatError(
                f"{what}: its components state no payload totals (files, bytes): a kit made by a development build "
                "of format 2, which kit no longer reads; rebuild the kit with this kitbuilder"
            )
        schemas.validate("manifest-v2" if version == 2 else "manifest", document, what=what)
        kit = document["kit"]
        for name in ("expires", "created"):
            # The schema's pattern admits 2099-02-30 and a trailing newline; the one strict parser does not.
            if name in kit:
                try:
                    timefmt.parse_canonical(kit[name])
                except timefmt.TimeFormatError as exc:
                    raise FormatError(f"{what}: $.kit.{name}: {exc}") from exc
        manifest = cls(
            kit=KitInfo(
                name=kit["name"],
                version=kit["version"],
                sequence=kit["sequence"],
                expires=kit["expires"],
                product=kit["product"],
                channel=kit["channel"],
                description=kit.get("description", ""),
                created=kit.get("created"),
            ),
            build=BuildInfo.from_json(document["build"], what=f"{what}: build"),
            components=tuple(
                Component(
                    id=c["id"],
                    role=c["role"],
                    phase=c.get("phase"),
                    subject=c.get("subject"),
                    options=ComponentOptions.from_json(
                        c.get("options", {}),
                        role=c["role"],
                        where=f"manifest components[{n}] ({c['role']} {c['id']}): options",
                    ),
                    payload=ComponentPayload.from_json(c, what=f"{what}: components[{n}] ({c['id']})")
                    if version == 2
                    else None,
                )
                for n, c in enumerate(document["components"])
            ),
            files=tuple(_file_entry(f) for f in document["files"]) if version == 1 else (),
            checks=parse_checks(document.get("checks", []), "manifest checks"),
            delta=DeltaInfo.from_json(document["delta"], what=f"{what}: delta") if "delta" in document else None,
            images=tuple(
                ImageRecord.from_json(r, what=f"{what}: images[{n}]") for n, r in enumerate(document.get("images", []))
            ),
            sboms=tuple(
                ShippedSbom.from_json(r, what=f"{what}: sboms[{n}]") for n, r in enumerate(document.get("sboms", []))
            ),
            frames=tuple(FrameEntry.from_json(f) for f in document.get("frames", ())),
            format_version=version,
            file_list=FileListRef.from_json(document["fileList"]) if version == 2 else None,
        )
        if manifest.file_list is not None:
            _check_totals(manifest.components, manifest.file_list, what=what)
        return manifest

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str = MANIFEST_JSON, limits: ParseLimits | None = None) -> Manifest:
        """Parse and check a manifest; ``limits`` (see ``MetadataBudget``) bound the parse before it starts."""
        return cls.from_json(jsonio.load_object(data, what=what, limits=limits), what=what)


def _check_totals(components: tuple[Component, ...], ref: FileListRef, *, what: str) -> None:
    """The components' totals add up to what fileList states: checked on parse, so ``kit inspect``, which shows
    them without reading the list, never shows totals that contradict the signed count and bytes."""
    files = sum(c.payload.files for c in components if c.payload is not None)
    size = sum(c.payload.bytes for c in components if c.payload is not None)
    if (files, size) != (ref.count, ref.payload_bytes):
        raise FormatError(
            f"{what}: the components hold {files} files and {size} bytes, but fileList.count is {ref.count} and "
            f"fileList.payloadBytes {ref.payload_bytes}"
        )


def _lacks_totals(document: dict[str, Any]) -> bool:
    components = document.get("components")
    return isinstance(components, list) and any(isinstance(c, dict) and "files" not in c for c in components)


def _file_entry(f: dict[str, Any]) -> FileEntry:
    return FileEntry(
        path=f["path"],
        size=f["size"],
        sha256=f["sha256"],
        role=f["role"],
        component=f["component"],
        offset=f["frame"]["offset"],
        length=f["frame"]["length"],
        frame_sha256=f["frame"]["sha256"],
    )


# What an honest kit spends on its metadata (docs/parse-limits.md). Format 1 (read only): a base for what the
# spec contributes (description, component options, checks, a delta's removed paths) plus a share per member
# of its index. Format 2: manifest.json and its statement grow with frames only (a base plus a share per
# frame); SHA256SUMS, the file list and attestations with the file count manifest.json signs (fileList.count,
# itself at most --max-members). A document over its limit is refused before it is read or parsed, so a kit
# costs at most what an honest kit of as many files and frames would.
_BASE_BYTES = 8 << 20
_MANIFEST_BYTES_PER_MEMBER = 4 << 10  # a pretty file entry is ~450 bytes plus its path (<= 255, escaped <= 6x)
_SUBJECT_BYTES_PER_MEMBER = 2 << 10  # a compact statement subject: name, digest
_SUMS_BYTES_PER_MEMBER = 64 + 2 + 255 + 1  # "<sha256>  <path>\n"
_SIGNATURE_BYTES = 64 << 10  # SHA256SUMS.sig: one raw signature (RSA-4096 is 512 bytes)
# SHA256SUMS.sigstore.json: a key-based bundle holds one signature, a digest and a key hint (about 1 KiB).
BUNDLE_BYTES = 64 << 10
# An attestation's statement: a predicate of fixed shape (provenance: spec, options, builder, times) plus a
# share per member (provenance lists every input: name, uri and digest, paths escaped at most 6x).
_ATTESTATION_BASE_BYTES = 1 << 20
_ATTESTATION_BYTES_PER_MEMBER = 4 << 10
_BASE_VALUES = 128 << 10
_VALUES_PER_MEMBER = 32  # a file entry holds 19 values and keys; a subject 7
_BASE_CONTAINERS = 16 << 10
# Format 2: a pretty frame entry (four fields, one digest) is under 256 bytes and 9 values and keys.
_MANIFEST_BYTES_PER_FRAME = 256
_VALUES_PER_FRAME = 9
_CONTAINERS_PER_MEMBER = 4  # a file entry holds 2 objects; a subject 2
# Format 2: the statement is the manifest plus two subjects and the statement's own fields.
_STATEMENT_EXTRA_BYTES = 4 << 10
_STATEMENT_EXTRA_VALUES = 64
_METADATA_MEMBERS = 22  # the most metadata members a format-2 kit has (five, 16 attestations, a bundle)


@dataclass(frozen=True)
class MetadataBudget:
    """Limits on a kit's metadata documents. Format 1: scaled by the members its index lists. Format 2:
    manifest.json and manifest.dsse.json by ``frames`` alone; the rest by ``members``, the file count
    manifest.json states (``fileList.count``, which readers refuse over --max-members)."""

    members: int
    frames: int = 0  # format 2: the frames the index lists (the manifest repeats the payload ones)
    format_version: int = 1

    def _manifest_bytes(self) -> int:
        if self.format_version == 2:
            return _BASE_BYTES + self.frames * _MANIFEST_BYTES_PER_FRAME
        return _BASE_BYTES + self.members * _MANIFEST_BYTES_PER_MEMBER + self.frames * _MANIFEST_BYTES_PER_FRAME

    def max_bytes(self, name: str) -> int | None:
        """The most bytes the metadata member ``name`` may have; None for members bounded elsewhere."""
        manifest = self._manifest_bytes()
        if name == MANIFEST_JSON:
            return manifest
        if name == MANIFEST_DSSE:
            if self.format_version == 2:
                # Base64 of the compact statement (predicate = the manifest, two subjects) and the signatures.
                return (manifest + _STATEMENT_EXTRA_BYTES) * 4 // 3 + 4 + _SIGNATURE_BYTES
            # Base64 of the compact statement (predicate = the manifest, plus one subject per file) and signatures.
            statement = manifest + self.members * _SUBJECT_BYTES_PER_MEMBER
            return statement * 4 // 3 + 4 + _SIGNATURE_BYTES
        if name == SHA256SUMS:
            return self.members * _SUMS_BYTES_PER_MEMBER
        if name == FILE_LIST:
            return self.members * MAX_LINE_BYTES
        if name == SHA256SUMS_SIG:
            return _SIGNATURE_BYTES
        if name == SIGSTORE_BUNDLE:
            return BUNDLE_BYTES
        if _ATTESTATION_NAME.fullmatch(name) is not None:
            return self.attestation_bytes()
        return None

    def attestation_bytes(self) -> int:
        """The most bytes one attestation envelope may have (in the kit, or one line of KIT.intoto.jsonl)."""
        # Format 2: a share per file and per metadata member (an attestation's subjects may name those too).
        members = self.members + _METADATA_MEMBERS if self.format_version == 2 else self.members
        statement = _ATTESTATION_BASE_BYTES + members * _ATTESTATION_BYTES_PER_MEMBER
        return statement * 4 // 3 + 4 + _SIGNATURE_BYTES

    def check_size(self, name: str, size: int) -> None:
        """ArchiveError if ``name`` is larger than an honest kit of this many members (files) and frames needs."""
        limit = self.max_bytes(name)
        if limit is not None and size > limit:
            what = (
                f"{self.members} files and {self.frames} frames"
                if self.format_version == 2
                else f"{self.members} members"
            )
            raise ArchiveError(
                f"{name}: {size} bytes exceeds the metadata cap of {limit} for a kit of {what} (docs/parse-limits.md)"
            )

    def manifest_limits(self) -> ParseLimits:
        if self.format_version == 2:
            return ParseLimits(
                max_values=_BASE_VALUES + self.frames * _VALUES_PER_FRAME,
                max_containers=_BASE_CONTAINERS + self.frames,
                why=f"the manifest of a kit of {self.frames} frames",
            )
        return ParseLimits(
            max_values=_BASE_VALUES + self.members * _VALUES_PER_MEMBER + self.frames * _VALUES_PER_FRAME,
            max_containers=_BASE_CONTAINERS + self.members * _CONTAINERS_PER_MEMBER + self.frames,
            why=f"the manifest of a kit of {self.members} members",
        )

    def statement_limits(self) -> ParseLimits:
        manifest = self.manifest_limits()
        if self.format_version == 2:
            return ParseLimits(
                max_values=manifest.max_values + _STATEMENT_EXTRA_VALUES,
                max_containers=manifest.max_containers + 16,
                why=f"the signed statement of a kit of {self.frames} frames",
            )
        return ParseLimits(
            max_values=manifest.max_values + self.members * 8,
            max_containers=manifest.max_containers + self.members * 2,
            why=f"the signed statement of a kit of {self.members} members",
        )

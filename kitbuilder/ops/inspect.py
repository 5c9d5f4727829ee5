"""kit inspect: what a kit says it is, read from the index and metadata frames only.

By default the signed manifest alone: the kit, its signers, its components with their signed payload totals
(format 2: ``files``, ``bytes``, ``byRole``), optional metadata. The file list (format 2's
manifest.files.jsonl, which grows with the files) is read and checked only when the report needs it: the
listing (``files``), or a section that reads members (``sbom``, ``images``): a plain inspect reads no file list
and builds no entry per file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from kitbuilder.archive.reader import Caps
from kitbuilder.core.dsse import Envelope
from kitbuilder.core.manifest import (
    IMAGES_DIR,
    MANIFEST_JSON,
    SHA256SUMS,
    Manifest,
    is_optional_metadata,
    metadata_names,
)
from kitbuilder.core.manifest_parts import EMPTY_PAYLOAD, ComponentPayload
from kitbuilder.errors import FormatError, IntegrityError, KitError
from kitbuilder.ops.kitfile import KitMetadata, load_files, open_kit, read_metadata
from kitbuilder.ops.signed_metadata import check_signed_metadata
from kitbuilder.trust.signatures import TrustPolicy, verify_envelope

if TYPE_CHECKING:
    from kitbuilder.oci.check import LayoutSummary
    from kitbuilder.ops.inspect_sections import ProvenanceSection, SbomSection


@dataclass(frozen=True)
class InspectReport:
    path: Path
    manifest: Manifest  # with its files when ``files_listed`` (or a section read them), else format 2: without
    kit_bytes: int
    claimed_signers: tuple[str, ...]
    verified_signers: tuple[str, ...] | None
    verification_error: str | None
    verification_exit_code: int = 0
    # Optional sections (`--sbom`, `--provenance`, `--images`); None when not asked for.
    sbom: SbomSection | None = None
    provenance: ProvenanceSection | None = None
    images: LayoutSummary | None = None
    metadata_members: tuple[str, ...] = ()  # in archive order: the required ones, then attestations
    files_listed: bool = False  # `--files`: the report lists every payload file (read from the checked list)

    def component_payloads(self) -> list[tuple[str, ComponentPayload]]:
        """Each component's payload totals (format 2: as signed; format 1: counted from its inline files)."""
        payloads = self.manifest.component_payloads()
        return [(c.id, payloads.get(c.id, EMPTY_PAYLOAD)) for c in self.manifest.components]

    def roles(self) -> dict[str, dict[str, int]]:
        """Files and bytes per file role, by role name (from the components' totals)."""
        roles: dict[str, dict[str, int]] = {}
        for _, payload in self.component_payloads():
            for role, totals in payload.by_role:
                summed = roles.setdefault(role, {"files": 0, "bytes": 0})
                summed["files"] += totals.files
                summed["bytes"] += totals.bytes
        return dict(sorted(roles.items()))

    def to_json(self) -> dict[str, object]:
        payloads = dict(self.component_payloads())
        document: dict[str, object] = {
            "reportVersion": 1,
            "kit": {"path": str(self.path), "bytes": self.kit_bytes, **self.manifest.kit.to_json()},
            "build": self.manifest.build.to_json(),
            "signatures": {
                "verified": self.verified_signers is not None,
                "claimedKeyIds": list(self.claimed_signers),
                "verifiedKeyIds": list(self.verified_signers or ()),
                "error": self.verification_error,
            },
            "components": [{**c.to_json(), **payloads[c.id].to_json()} for c in self.manifest.components],
            "roles": self.roles(),
            "fileCount": self.manifest.file_count,
            "payloadBytes": self.manifest.payload_bytes,
            "delta": None if self.manifest.delta is None else self.manifest.delta.to_json(),
            "optionalMetadata": self.optional_metadata(),
            **{
                name: section.to_json()
                for name, section in (("sbom", self.sbom), ("provenance", self.provenance), ("images", self.images))
                if section is not None
            },
        }
        if self.files_listed:
            document["files"] = [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "role": f.role, "component": f.component}
                for f in self.manifest.files
            ]
        return document

    def optional_metadata(self) -> list[str]:
        return [name for name in self.metadata_members if is_optional_metadata(name)]


def inspect_kit(
    path: Path,
    *,
    policy: TrustPolicy | None,
    caps: Caps | None = None,
    sbom: bool = False,
    provenance: bool = False,
    images: bool = False,
    files: bool = False,
) -> InspectReport:
    """Read metadata (and, per section, a few small members) without decompressing payload.

    With a policy, the signatures are checked too; every member read for a section is
    checked against the manifest's digest either way, so a report never shows bytes
    the manifest does not vouch for. Format 2: the file list is read (and checked against
    the manifest, its totals included) only for ``files``, ``sbom`` or ``images``.
    """
    caps = caps or Caps()
    # The sections that read members locate them through the file list; the listing is the list.
    needs_list = files or sbom or images
    with open_kit(path) as stream:
        # Format 2: the file list is read after the signatures when they are checked (check_signed_metadata),
        # else here when the report needs it: either way once, line by line.
        # SHA256SUMS (~95 bytes a file) is read only when something is checked against it: the signatures (its
        # digest is a subject; its own signature), the file list, the provenance's subjects. A plain inspect reads
        # the manifest and its envelope only, whatever the number of files.
        flat = policy is None and not (needs_list or provenance)
        metadata = read_metadata(
            stream, caps, defer_files=True, unread=frozenset({SHA256SUMS}) if flat else frozenset()
        )
        claimed = tuple(sorted({s.keyid for s in metadata.envelope.signatures}))
        verified: tuple[str, ...] | None = None
        error: str | None = None
        exit_code = 0
        manifest = metadata.manifest
        if policy is not None:
            try:
                verified, _, manifest = check_signed_metadata(metadata, policy, files=needs_list)
            except KitError as exc:
                error = str(exc)
                exit_code = exc.exit_code
        if needs_list and metadata.files_pending:
            manifest = load_files(metadata)
        read_checked = _member_reader(stream, metadata, manifest, caps) if sbom or images else None
        sbom_section = _sbom_section(manifest, read_checked) if read_checked and sbom else None
        provenance_section = _provenance_section(metadata, policy) if provenance else None
        images_section = _images_section(manifest, read_checked) if read_checked and images else None
    return InspectReport(
        path=path,
        manifest=manifest,
        kit_bytes=metadata.location.file_size,
        claimed_signers=claimed,
        verified_signers=verified,
        verification_error=error,
        verification_exit_code=exit_code,
        sbom=sbom_section,
        provenance=provenance_section,
        images=images_section,
        metadata_members=metadata_names(metadata.members, manifest.format_version),
        files_listed=files,
    )


def _member_reader(stream: BinaryIO, metadata: KitMetadata, manifest: Manifest, caps: Caps) -> Callable[[str], bytes]:
    """A reader of payload files by path, each checked against the manifest's digest (the list is read)."""
    from kitbuilder.ops.verify import read_signed_file

    by_path = manifest.by_path()
    index = metadata.location.index
    listed = set(index.sizes())

    def read_checked(kit_path: str) -> bytes:
        signed = by_path.get(kit_path)
        if signed is None:
            raise IntegrityError(f"{kit_path}: not a file of the signed manifest")
        # Located on demand: a plain inspect locates nothing beyond the metadata.
        located = {kit_path: index.locate(kit_path)} if kit_path in listed else {}
        return read_signed_file(stream, located, signed, caps)

    return read_checked


def _sbom_section(manifest: Manifest, read_checked: Callable[[str], bytes]) -> SbomSection:
    from kitbuilder.core.sbom import (
        KIT_SBOM_PATH,
        SbomError,
        check_sbom,
        check_sbom_document,
        kit_sbom_matches,
        load_sbom,
    )
    from kitbuilder.ops.inspect_sections import KitSbomView, SbomSection, ShippedSbomView

    shipped: list[ShippedSbomView] = []
    for record in manifest.sboms:
        # Each shipped SBOM is checked again (a forged kit's could be anything) and summarised: its
        # licences and suppliers are what an auditor asks about; the kit's own SBOM lists files only.
        try:
            info = check_sbom(read_checked(record.path), record.path)
        except SbomError as exc:
            raise FormatError(exc.message) from exc
        shipped.append(ShippedSbomView(record, info.subject_name, info.subject_version, info.summary))
    kit_sbom = None
    if KIT_SBOM_PATH in manifest.by_path():
        # Validated like a shipped SBOM before it is summarised: a forged kit's SBOM is anything at all.
        try:
            document = load_sbom(read_checked(KIT_SBOM_PATH), KIT_SBOM_PATH)
            info = check_sbom_document(document, KIT_SBOM_PATH)
        except SbomError as exc:
            raise FormatError(exc.message) from exc
        if info.format != "CycloneDX":
            raise FormatError(f"{KIT_SBOM_PATH}: $: an {info.format} document; kit build writes CycloneDX here")
        summary = info.summary
        spec_version, serial = document.get("specVersion"), document.get("serialNumber")
        kit_sbom = KitSbomView(
            path=KIT_SBOM_PATH,
            # Each component's file count, bytes and inventory digest, as the SBOM states them, are what the
            # manifest's files give (it is signed, but says so itself).
            matches_manifest=kit_sbom_matches(document, (c.id for c in manifest.components), manifest.files),
            spec_version=spec_version if isinstance(spec_version, str) else None,
            serial_number=serial if isinstance(serial, str) else None,
            summary=summary,
        )
    return SbomSection(kit_sbom, tuple(shipped))


def _provenance_section(metadata: KitMetadata, policy: TrustPolicy | None) -> ProvenanceSection:
    from kitbuilder.core.provenance import PROVENANCE_MEMBER, read_predicate
    from kitbuilder.core.statement import Statement
    from kitbuilder.ops.inspect_sections import ProvenanceAttestation, ProvenanceSection

    data = metadata.members.get(PROVENANCE_MEMBER)
    if data is None:
        return ProvenanceSection(None)
    envelope = Envelope.from_bytes(data, what=PROVENANCE_MEMBER)
    signers: tuple[str, ...] | None = None
    error = None
    if policy is not None:
        try:
            signers = verify_envelope(envelope, policy=policy, what=PROVENANCE_MEMBER)
        except KitError as exc:
            error = str(exc)
    statement = Statement.from_bytes(envelope.payload, what=f"{PROVENANCE_MEMBER} payload")
    view = read_predicate(statement.predicate, what=PROVENANCE_MEMBER)
    metadata_digests = {
        name: hashlib.sha256(metadata.members[name]).hexdigest() for name in (MANIFEST_JSON, SHA256SUMS)
    }
    return ProvenanceSection(
        ProvenanceAttestation(
            path=PROVENANCE_MEMBER,
            predicate_type=statement.predicate_type,
            subjects=statement.subjects,
            # Whether the statement is about this kit's signed metadata (kit verify fails when it is not).
            subjects_match=all(metadata_digests.get(s.name) == s.sha256 for s in statement.subjects),
            verified_key_ids=signers,
            error=error,
            view=view,
        )
    )


def _images_section(manifest: Manifest, read_checked: Callable[[str], bytes]) -> LayoutSummary:
    from kitbuilder.oci.check import LayoutSummary, check_layout

    prefix = f"{IMAGES_DIR}/"
    entries = {f.path: (f.size, f.sha256) for f in manifest.files if f.path.startswith(prefix)}
    if not entries and not manifest.images:
        return LayoutSummary(images=(), blob_count=0, stored_bytes=0, referenced_bytes=0)
    return check_layout(entries, read_checked, records=manifest.images)

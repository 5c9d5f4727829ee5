"""The optional sections of ``kit inspect`` (``--sbom``, ``--provenance``; ``--images`` is oci/check's
``LayoutSummary``) as typed results: ops/inspect.py builds them, the text renderer reads their fields and
``to_json`` is the report's section (schemas/inspect-report.schema.json)."""

from __future__ import annotations

from dataclasses import dataclass

from kitbuilder.core.provenance import ProvenanceView
from kitbuilder.core.sbom.model import SbomSummary, ShippedSbom
from kitbuilder.core.statement import Subject


@dataclass(frozen=True)
class ShippedSbomView:
    """A shipped SBOM: its signed record, the subject its document names and what it lists."""

    record: ShippedSbom
    subject_name: str | None
    subject_version: str | None
    summary: SbomSummary

    def to_json(self) -> dict[str, object]:
        return {
            **self.record.to_json(),
            "describes": {"name": self.subject_name, "version": self.subject_version},
            **self.summary.to_json(),
        }


@dataclass(frozen=True)
class KitSbomView:
    """The kit's own SBOM (sbom/kit.cdx.json) and whether it lists exactly the manifest's files."""

    path: str
    matches_manifest: bool
    spec_version: str | None
    serial_number: str | None
    summary: SbomSummary

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "matchesManifest": self.matches_manifest,
            "specVersion": self.spec_version,
            "serialNumber": self.serial_number,
            **self.summary.to_json(),
        }


@dataclass(frozen=True)
class SbomSection:
    kit_sbom: KitSbomView | None
    shipped: tuple[ShippedSbomView, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "kitSbom": None if self.kit_sbom is None else self.kit_sbom.to_json(),
            "shipped": [s.to_json() for s in self.shipped],
        }


@dataclass(frozen=True)
class ProvenanceAttestation:
    """attestations/provenance.dsse.json: its statement's subjects (and whether they are this kit's signed
    metadata), the key ids that verified it (None: not checked) or the error, and the predicate as read."""

    path: str
    predicate_type: str
    subjects: tuple[Subject, ...]
    subjects_match: bool
    verified_key_ids: tuple[str, ...] | None
    error: str | None
    view: ProvenanceView

    def to_json(self) -> dict[str, object]:
        return {
            "present": True,
            "path": self.path,
            "predicateType": self.predicate_type,
            "subjects": [{"name": s.name, "sha256": s.sha256} for s in self.subjects],
            "subjectsMatch": self.subjects_match,
            "verified": self.verified_key_ids is not None,
            "verifiedKeyIds": list(self.verified_key_ids or ()),
            "error": self.error,
            **self.view.to_json(),
        }


@dataclass(frozen=True)
class ProvenanceSection:
    attestation: ProvenanceAttestation | None  # None: the kit carries no provenance

    def to_json(self) -> dict[str, object]:
        return {"present": False} if self.attestation is None else self.attestation.to_json()

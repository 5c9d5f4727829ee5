"""kit sbom: one SBOM out of a kit, read through the index and checked against the signed manifest."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitbuilder.archive.reader import Caps
from kitbuilder.atomic import write_atomic
from kitbuilder.core.manifest import Manifest
from kitbuilder.core.sbom import KIT_SBOM_PATH
from kitbuilder.errors import IntegrityError, UsageError
from kitbuilder.ops.verify import check_signed_metadata, open_kit, read_metadata, read_signed_file
from kitbuilder.trust.signatures import TrustPolicy


@dataclass(frozen=True)
class ExtractedSbom:
    path: str
    format: str
    subject: str | None
    data: bytes
    sha256: str
    verified: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "format": self.format,
            "subject": self.subject,
            "bytes": len(self.data),
            "sha256": self.sha256,
            "verified": self.verified,
        }


def _choose(manifest: Manifest, subject: str | None) -> tuple[str, str, str | None]:
    """(kit path, format, subject) of the SBOM asked for; UsageError listing what the kit has otherwise."""
    if subject is None:
        if KIT_SBOM_PATH not in manifest.by_path():
            raise UsageError(f"kit has no {KIT_SBOM_PATH} (built before kits carried one); use --subject")
        return KIT_SBOM_PATH, "CycloneDX", manifest.kit.name
    matches = [s for s in manifest.sboms if subject in (s.subject, s.component)]
    if not matches:
        offered = ", ".join(sorted({s.subject for s in manifest.sboms})) or "none"
        raise UsageError(f"--subject {subject!r}: no shipped SBOM describes it (subjects in this kit: {offered})")
    if len(matches) > 1:
        paths = ", ".join(s.path for s in matches)
        raise UsageError(f"--subject {subject!r}: several SBOMs describe it ({paths}); give the component id instead")
    chosen = matches[0]
    return chosen.path, chosen.format, chosen.subject


def extract_sbom(
    kit: Path, *, policy: TrustPolicy | None, subject: str | None = None, caps: Caps | None = None
) -> ExtractedSbom:
    """Read one SBOM member; with a policy the manifest's signatures are checked first (TrustError otherwise)."""
    caps = caps or Caps()
    with open_kit(kit) as stream:
        metadata = read_metadata(stream, caps)
        manifest = metadata.manifest
        if policy is not None:
            _, _, manifest = check_signed_metadata(metadata, policy)
        path, kind, described = _choose(manifest, subject)
        signed = manifest.by_path().get(path)
        if signed is None:
            raise IntegrityError(f"{path}: manifest.json sboms names it, but it is not a file of the kit")
        data = read_signed_file(stream, metadata.location.index.by_path(), signed, caps)
    return ExtractedSbom(
        path=path, format=kind, subject=described, data=data, sha256=signed.sha256, verified=policy is not None
    )


def save_sbom(extracted: ExtractedSbom, output: Path) -> None:
    """``kit sbom -o``: written atomically; HostIOError (disk full, read-only), UsageError (bad path)."""
    write_atomic(output, extracted.data)

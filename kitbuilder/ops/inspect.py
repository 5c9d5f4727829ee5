"""kit inspect: what a kit says it is, read from the index and metadata frames only."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitbuilder.archive.reader import Caps
from kitbuilder.core.manifest import Manifest
from kitbuilder.errors import KitError
from kitbuilder.ops.verify import check_signed_metadata, open_kit, read_metadata
from kitbuilder.trust.signatures import TrustPolicy


@dataclass(frozen=True)
class InspectReport:
    path: Path
    manifest: Manifest
    kit_bytes: int
    claimed_signers: tuple[str, ...]
    verified_signers: tuple[str, ...] | None
    verification_error: str | None
    verification_exit_code: int = 0

    def to_json(self) -> dict[str, Any]:
        roles: dict[str, dict[str, int]] = defaultdict(lambda: {"files": 0, "bytes": 0})
        for entry in self.manifest.files:
            roles[entry.role]["files"] += 1
            roles[entry.role]["bytes"] += entry.size
        return {
            "reportVersion": 1,
            "kit": {"path": str(self.path), "bytes": self.kit_bytes, **self.manifest.kit.to_json()},
            "build": self.manifest.build,
            "signatures": {
                "verified": self.verified_signers is not None,
                "claimedKeyIds": list(self.claimed_signers),
                "verifiedKeyIds": list(self.verified_signers or ()),
                "error": self.verification_error,
            },
            "components": [c.to_json() for c in self.manifest.components],
            "roles": dict(sorted(roles.items())),
            "files": [
                {"path": f.path, "size": f.size, "sha256": f.sha256, "role": f.role, "component": f.component}
                for f in self.manifest.files
            ],
            "payloadBytes": self.manifest.payload_bytes,
            "delta": self.manifest.delta,
        }


def inspect_kit(path: Path, *, policy: TrustPolicy | None, caps: Caps | None = None) -> InspectReport:
    """Read metadata without decompressing payload; with a policy, also check the signatures."""
    with open_kit(path) as stream:
        metadata = read_metadata(stream, caps or Caps())
    claimed = tuple(sorted({s.keyid for s in metadata.envelope.signatures}))
    verified: tuple[str, ...] | None = None
    error: str | None = None
    exit_code = 0
    manifest = metadata.manifest
    if policy is not None:
        try:
            verified, _, manifest = check_signed_metadata(metadata, policy)
        except KitError as exc:
            error = str(exc)
            exit_code = exc.exit_code
    return InspectReport(
        path=path,
        manifest=manifest,
        kit_bytes=metadata.location.file_size,
        claimed_signers=claimed,
        verified_signers=verified,
        verification_error=error,
        verification_exit_code=exit_code,
    )

"""kit diff: what changed between two kits, from their indexes and metadata only (no payload is read).

Format 1 and format 2 kits compare alike by file; with both in format 2 the report also says how many of
the new kit's payload frames the old one lacks and their size: what a delta between them would ship.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kitbuilder.archive.reader import Caps
from kitbuilder.core.manifest import Manifest
from kitbuilder.ops.verify import KitMetadata, check_signed_metadata, open_kit, read_metadata
from kitbuilder.trust.signatures import TrustPolicy


@dataclass(frozen=True)
class KitDiff:
    old: Manifest
    new: Manifest
    old_signers: tuple[str, ...]
    new_signers: tuple[str, ...]
    signers_verified: bool

    def to_json(self) -> dict[str, Any]:
        old_files = self.old.by_path()
        new_files = self.new.by_path()
        added = sorted(set(new_files) - set(old_files))
        removed = sorted(set(old_files) - set(new_files))
        changed = sorted(p for p in set(old_files) & set(new_files) if old_files[p].sha256 != new_files[p].sha256)
        old_kit, new_kit = self.old.kit.to_json(), self.new.kit.to_json()
        # Both kits' fields: one may have a field the other lacks (created, when only one set SOURCE_DATE_EPOCH).
        kit_changes = {
            field: {"old": old_kit.get(field), "new": new_kit.get(field)}
            for field in sorted(old_kit.keys() | new_kit.keys())
            if old_kit.get(field) != new_kit.get(field)
        }
        old_components = {c.id: c.to_json() for c in self.old.components}
        new_components = {c.id: c.to_json() for c in self.new.components}
        old_checks = {c["id"]: c for c in self.old.checks}
        new_checks = {c["id"]: c for c in self.new.checks}
        return {
            "reportVersion": 1,
            "old": {"name": self.old.kit.name, "version": self.old.kit.version, "sequence": self.old.kit.sequence},
            "new": {"name": self.new.kit.name, "version": self.new.kit.version, "sequence": self.new.kit.sequence},
            "kit": kit_changes,
            "files": {
                "added": [_file(new_files[p]) for p in added],
                "removed": [_file(old_files[p]) for p in removed],
                "changed": [
                    {
                        "path": p,
                        "oldSize": old_files[p].size,
                        "newSize": new_files[p].size,
                        "oldSha256": old_files[p].sha256,
                        "newSha256": new_files[p].sha256,
                    }
                    for p in changed
                ],
                "unchanged": len(set(old_files) & set(new_files)) - len(changed),
            },
            "components": _keyed_changes(old_components, new_components),
            "checks": _keyed_changes(old_checks, new_checks),
            # By reference; "changed" means another manifest digest (a rebuilt or re-pulled image).
            "images": _keyed_changes({i["ref"]: i for i in self.old.images}, {i["ref"]: i for i in self.new.images}),
            "sboms": _keyed_changes({b["path"]: b for b in self.old.sboms}, {b["path"]: b for b in self.new.sboms}),
            "signers": {
                "verified": self.signers_verified,
                "added": sorted(set(self.new_signers) - set(self.old_signers)),
                "removed": sorted(set(self.old_signers) - set(self.new_signers)),
                "kept": sorted(set(self.old_signers) & set(self.new_signers)),
            },
            "payloadBytes": {"old": self.old.payload_bytes, "new": self.new.payload_bytes},
            "frames": _frames(self.old, self.new),
        }


def _frames(old: Manifest, new: Manifest) -> dict[str, int] | None:
    """Format 2: the new kit's payload frames the old one lacks (by signed digest): what a delta would ship."""
    if old.format_version != 2 or new.format_version != 2:
        return None
    have = {f.sha256 for f in old.frames}
    fresh = {f.sha256: f.length for f in new.frames if f.sha256 not in have}
    return {
        "old": len(old.frames),
        "new": len(new.frames),
        "shared": sum(1 for f in new.frames if f.sha256 in have),
        "newFrames": len(fresh),
        "newBytes": sum(fresh.values()),
    }


def _file(entry: Any) -> dict[str, Any]:
    return {"path": entry.path, "size": entry.size, "sha256": entry.sha256, "role": entry.role}


def _keyed_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(new) - set(old)),
        "removed": sorted(set(old) - set(new)),
        "changed": sorted(k for k in set(old) & set(new) if old[k] != new[k]),
    }


def _load(path: Path, policy: TrustPolicy | None, caps: Caps) -> tuple[Manifest, tuple[str, ...]]:
    with open_kit(path) as stream:
        metadata: KitMetadata = read_metadata(stream, caps)
    if policy is None:
        return metadata.manifest, tuple(sorted({s.keyid for s in metadata.envelope.signatures}))
    signers, _, manifest = check_signed_metadata(metadata, policy)
    return manifest, signers


def diff_kits(old: Path, new: Path, *, policy: TrustPolicy | None, caps: Caps | None = None) -> KitDiff:
    """Compare two kits' signed metadata; with a policy both must verify (signers are then verified ids)."""
    old_manifest, old_signers = _load(old, policy, caps or Caps())
    new_manifest, new_signers = _load(new, policy, caps or Caps())
    return KitDiff(old_manifest, new_manifest, old_signers, new_signers, signers_verified=policy is not None)

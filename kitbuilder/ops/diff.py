"""kit diff: what changed between two kits, from their indexes and metadata only (no payload is read).

Format 1 and format 2 kits compare alike by file; with both in format 2 the report also says how many of
the new kit's payload frames the old one lacks and their size: what a delta between them would ship.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kitbuilder.archive.reader import Caps
from kitbuilder.core.manifest import FileEntry, Manifest
from kitbuilder.ops.verify import KitMetadata, check_signed_metadata, open_kit, read_metadata
from kitbuilder.trust.signatures import TrustPolicy

KitValue = str | int | None  # a field of a manifest's ``kit`` block


@dataclass(frozen=True)
class KitSide:
    name: str
    version: str
    sequence: int

    def to_json(self) -> dict[str, object]:
        return {"name": self.name, "version": self.version, "sequence": self.sequence}


@dataclass(frozen=True)
class FieldChange:
    old: KitValue
    new: KitValue

    def to_json(self) -> dict[str, object]:
        return {"old": self.old, "new": self.new}


@dataclass(frozen=True)
class FileRef:
    path: str
    size: int
    sha256: str
    role: str

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256, "role": self.role}


@dataclass(frozen=True)
class FileChange:
    path: str
    old_size: int
    new_size: int
    old_sha256: str
    new_sha256: str

    def to_json(self) -> dict[str, object]:
        return {
            "path": self.path,
            "oldSize": self.old_size,
            "newSize": self.new_size,
            "oldSha256": self.old_sha256,
            "newSha256": self.new_sha256,
        }


@dataclass(frozen=True)
class FileChanges:
    added: tuple[FileRef, ...]
    removed: tuple[FileRef, ...]
    changed: tuple[FileChange, ...]
    unchanged: int

    def to_json(self) -> dict[str, object]:
        return {
            "added": [f.to_json() for f in self.added],
            "removed": [f.to_json() for f in self.removed],
            "changed": [f.to_json() for f in self.changed],
            "unchanged": self.unchanged,
        }


@dataclass(frozen=True)
class KeyedChanges:
    """Keys (ids, refs, paths) added, removed, or kept with another value, each sorted."""

    added: tuple[str, ...]
    removed: tuple[str, ...]
    changed: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {"added": list(self.added), "removed": list(self.removed), "changed": list(self.changed)}

    @classmethod
    def between(cls, old: Mapping[str, object], new: Mapping[str, object]) -> KeyedChanges:
        return cls(
            added=tuple(sorted(set(new) - set(old))),
            removed=tuple(sorted(set(old) - set(new))),
            changed=tuple(sorted(k for k in set(old) & set(new) if old[k] != new[k])),
        )


@dataclass(frozen=True)
class SignerChanges:
    verified: bool  # key ids checked against a trust policy, not only claimed by the envelopes
    added: tuple[str, ...]
    removed: tuple[str, ...]
    kept: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "verified": self.verified,
            "added": list(self.added),
            "removed": list(self.removed),
            "kept": list(self.kept),
        }


@dataclass(frozen=True)
class FrameChanges:
    """Format 2: the new kit's payload frames the old one lacks (by signed digest): what a delta would ship."""

    old: int
    new: int
    shared: int
    new_frames: int
    new_bytes: int

    def to_json(self) -> dict[str, object]:
        return {
            "old": self.old,
            "new": self.new,
            "shared": self.shared,
            "newFrames": self.new_frames,
            "newBytes": self.new_bytes,
        }


@dataclass(frozen=True)
class KitDiff:
    old: KitSide
    new: KitSide
    kit: tuple[tuple[str, FieldChange], ...]  # the kit block's fields that differ, by name
    files: FileChanges
    components: KeyedChanges
    checks: KeyedChanges
    images: KeyedChanges  # by reference; "changed" means another manifest digest (a rebuilt or re-pulled image)
    sboms: KeyedChanges
    signers: SignerChanges
    old_payload_bytes: int
    new_payload_bytes: int
    frames: FrameChanges | None

    def to_json(self) -> dict[str, object]:
        return {
            "reportVersion": 1,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "kit": {name: change.to_json() for name, change in self.kit},
            "files": self.files.to_json(),
            "components": self.components.to_json(),
            "checks": self.checks.to_json(),
            "images": self.images.to_json(),
            "sboms": self.sboms.to_json(),
            "signers": self.signers.to_json(),
            "payloadBytes": {"old": self.old_payload_bytes, "new": self.new_payload_bytes},
            "frames": None if self.frames is None else self.frames.to_json(),
        }


def compare(
    old: Manifest, new: Manifest, old_signers: tuple[str, ...], new_signers: tuple[str, ...], *, verified: bool
) -> KitDiff:
    """What changed from ``old`` to ``new`` (their signed manifests and signer key ids)."""
    old_files, new_files = old.by_path(), new.by_path()
    changed = sorted(p for p in set(old_files) & set(new_files) if old_files[p].sha256 != new_files[p].sha256)
    old_kit, new_kit = old.kit.to_json(), new.kit.to_json()
    return KitDiff(
        old=KitSide(old.kit.name, old.kit.version, old.kit.sequence),
        new=KitSide(new.kit.name, new.kit.version, new.kit.sequence),
        # Both kits' fields: one may have a field the other lacks (created, when only one set SOURCE_DATE_EPOCH).
        kit=tuple(
            (name, FieldChange(_kit_value(old_kit.get(name)), _kit_value(new_kit.get(name))))
            for name in sorted(old_kit.keys() | new_kit.keys())
            if old_kit.get(name) != new_kit.get(name)
        ),
        files=FileChanges(
            added=tuple(_file(new_files[p]) for p in sorted(set(new_files) - set(old_files))),
            removed=tuple(_file(old_files[p]) for p in sorted(set(old_files) - set(new_files))),
            changed=tuple(
                FileChange(p, old_files[p].size, new_files[p].size, old_files[p].sha256, new_files[p].sha256)
                for p in changed
            ),
            unchanged=len(set(old_files) & set(new_files)) - len(changed),
        ),
        components=KeyedChanges.between({c.id: c for c in old.components}, {c.id: c for c in new.components}),
        checks=KeyedChanges.between({c.id: c for c in old.checks}, {c.id: c for c in new.checks}),
        images=KeyedChanges.between({i.ref: i for i in old.images}, {i.ref: i for i in new.images}),
        sboms=KeyedChanges.between({b.path: b for b in old.sboms}, {b.path: b for b in new.sboms}),
        signers=SignerChanges(
            verified=verified,
            added=tuple(sorted(set(new_signers) - set(old_signers))),
            removed=tuple(sorted(set(old_signers) - set(new_signers))),
            kept=tuple(sorted(set(old_signers) & set(new_signers))),
        ),
        old_payload_bytes=old.payload_bytes,
        new_payload_bytes=new.payload_bytes,
        frames=_frames(old, new),
    )


def _kit_value(value: object) -> KitValue:
    if value is None or isinstance(value, str | int):
        return value
    raise TypeError(f"kit field of type {type(value).__name__}")  # KitInfo.to_json writes str and int only


def _frames(old: Manifest, new: Manifest) -> FrameChanges | None:
    if old.format_version != 2 or new.format_version != 2:
        return None
    have = {f.sha256 for f in old.frames}
    fresh = {f.sha256: f.length for f in new.frames if f.sha256 not in have}
    return FrameChanges(
        old=len(old.frames),
        new=len(new.frames),
        shared=sum(1 for f in new.frames if f.sha256 in have),
        new_frames=len(fresh),
        new_bytes=sum(fresh.values()),
    )


def _file(entry: FileEntry) -> FileRef:
    return FileRef(entry.path, entry.size, entry.sha256, entry.role)


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
    return compare(old_manifest, new_manifest, old_signers, new_signers, verified=policy is not None)

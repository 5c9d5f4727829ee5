"""Delta kits and kit patch: ship only what changed, rebuild the new kit from the old one's frames.

A delta kit is an ordinary signed kit whose manifest carries a ``delta`` block
(the SHA-256 of the one base manifest it applies to, the paths removed) and
whose payload holds the added or changed files plus, under ``delta/target/``,
the new kit's four metadata members exactly as a full build wrote them.
``kit patch`` assembles the new kit from the base's and the delta's
compressed data frames, copied verbatim, and checks every member it writes
against the signed frame digests before the result replaces anything.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kitbuilder.archive import reader
from kitbuilder.archive.index import IndexEntry
from kitbuilder.archive.reader import Caps
from kitbuilder.archive.writer import KitWriter
from kitbuilder.atomic import DIR_SUFFIX, atomic_output, check_target, clear_stale, scratch_dir, temp_pattern
from kitbuilder.core.dsse import Envelope
from kitbuilder.core.manifest import (
    MANIFEST_DSSE,
    MANIFEST_JSON,
    Component,
    FileEntry,
    Manifest,
    metadata_names,
)
from kitbuilder.errors import IntegrityError, PolicyError, UsageError
from kitbuilder.ops.verify import (
    KitMetadata,
    VerifyOptions,
    check_policy,
    check_signed_metadata,
    open_kit,
    read_metadata,
    verify_kit,
)
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import TrustPolicy

TARGET_DIR = "delta/target"
DELTA_COMPONENT = Component(id="kit-delta", role="delta")
HASH_CHUNK = 1 << 20


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def copy_member(
    writer: KitWriter, path: str, stream: BinaryIO, entry: IndexEntry | FileEntry, caps: Caps
) -> IndexEntry:
    """Copy ``entry``'s data frame verbatim as member ``path``; IntegrityError if its bytes are not the signed ones."""
    source_entry = entry if isinstance(entry, IndexEntry) else _as_index_entry(entry)
    source, length, digest = reader.data_frame_source(stream, source_entry, caps)
    written = writer.add_data_frame(path, source_entry.size, source_entry.sha256, source, length, digest)
    if digest.hexdigest() != source_entry.frame_sha256:
        raise IntegrityError(f"{source_entry.path}: compressed frames differ from their signed digest; not copied")
    return written


def _as_index_entry(entry: FileEntry) -> IndexEntry:
    return IndexEntry(entry.path, entry.offset, entry.length, entry.size, entry.sha256, entry.frame_sha256)


class FrameReuse:
    """A verified base kit whose data frames a new build may copy instead of recompressing."""

    def __init__(self, path: Path, policy: TrustPolicy, caps: Caps | None = None) -> None:
        self.path = path
        self.caps = caps or Caps()
        self._stream = open_kit(path)
        self.metadata = read_metadata(self._stream, self.caps)
        _, _, self.manifest = check_signed_metadata(self.metadata, policy)
        self.manifest_sha256 = hashlib.sha256(self.metadata.members[MANIFEST_JSON]).hexdigest()
        self._by_content = {(f.sha256, f.size): f for f in self.manifest.files}
        self.reused: list[str] = []

    def close(self) -> None:
        self._stream.close()

    def check_compatible(self, build_info: dict[str, Any]) -> None:
        base = self.manifest.build.get("compression")
        if base != build_info["compression"]:
            raise UsageError(
                f"--delta-from {self.path}: base was compressed with {base}, this build uses "
                f"{build_info['compression']}; use the same --level/--threads so frames can be reused"
            )

    def copy_if_known(self, writer: KitWriter, kit_path: str, source: Path, size: int) -> IndexEntry | None:
        """Hash ``source``; when the base holds the same content, copy its frame and return the entry."""
        return self.copy_if_digest_known(writer, kit_path, _sha256_file(source), size)

    def copy_if_digest_known(self, writer: KitWriter, kit_path: str, sha256: str, size: int) -> IndexEntry | None:
        """Copy the base's frame for content already known by digest (an image blob is named by its digest)."""
        known = self._by_content.get((sha256, size))
        if known is None:
            return None
        self.reused.append(kit_path)
        return copy_member(writer, kit_path, self._stream, known, self.caps)


@dataclass(frozen=True)
class DeltaResult:
    output: Path
    full_output: Path
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    reused: int
    delta_bytes: int


def write_delta(
    full_kit: Path, base: FrameReuse, *, keys: list[PrivateKey], output: Path, policy: TrustPolicy
) -> DeltaResult:
    """Write the delta that turns ``base`` into ``full_kit`` (both verified metadata, same signers)."""
    from kitbuilder.ops.build import seal

    with open_kit(full_kit) as stream:
        target = read_metadata(stream, base.caps)
        _, _, manifest = check_signed_metadata(target, policy)
        base_files = {f.path: f for f in base.manifest.files}
        base_content = {(f.sha256, f.size) for f in base.manifest.files}
        shipped = [f for f in manifest.files if (f.sha256, f.size) not in base_content]
        added = tuple(sorted(f.path for f in shipped if f.path not in base_files))
        changed = tuple(sorted(f.path for f in shipped if f.path in base_files))
        removed = tuple(sorted(set(base_files) - {f.path for f in manifest.files}))
        build = manifest.build
        with atomic_output(output) as out:
            compression = build["compression"]
            writer = KitWriter(
                out,
                level=compression["level"],
                threads=-1 if compression["multithreaded"] else 0,
                mtime=build.get("mtime", 0),
            )
            files: list[FileEntry] = []
            for item in shipped:
                entry = copy_member(writer, item.path, stream, item, base.caps)
                files.append(_file_entry(entry, item.role, item.component))
            for name in target.members:
                entry = writer.add_bytes(f"{TARGET_DIR}/{name}", target.members[name])
                files.append(_file_entry(entry, "delta-target", DELTA_COMPONENT.id))
            delta_manifest = Manifest(
                kit=manifest.kit,
                build=build,
                components=(*manifest.components, DELTA_COMPONENT),
                files=tuple(sorted(files, key=lambda f: f.offset)),
                checks=manifest.checks,
                delta={
                    "baseManifestSha256": base.manifest_sha256,
                    "baseSequence": base.manifest.kit.sequence,
                    "baseVersion": base.manifest.kit.version,
                    "removed": list(removed),
                    "targetManifestSha256": hashlib.sha256(target.members[MANIFEST_JSON]).hexdigest(),
                },
            )
            seal(writer, delta_manifest, keys)
            writer.finish()
            size = writer.offset
    return DeltaResult(output, full_kit, added, changed, removed, len(manifest.files) - len(shipped), size)


def _file_entry(entry: IndexEntry, role: str, component: str) -> FileEntry:
    return FileEntry(
        entry.path, entry.size, entry.sha256, role, component, entry.offset, entry.length, entry.frame_sha256
    )


# ---------------------------------------------------------------------------------------------------------------
# kit patch


@dataclass(frozen=True)
class PatchResult:
    output: Path
    manifest: Manifest
    copied_from_base: int
    copied_from_delta: int
    bytes_written: int


@contextlib.contextmanager
def _patch_lock(final: Path) -> Iterator[None]:
    """One patch per target at a time; leftovers of a killed patch are removed under the lock."""
    directory = final.parent if str(final.parent) else Path(".")
    lock_path = directory / f".{final.name}.kit-lock"
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise UsageError(f"{final}: another kit patch is writing it; wait for it to finish") from exc
        for leftover in directory.glob(f".{final.name}.*.part"):
            with contextlib.suppress(OSError):
                leftover.unlink()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.unlink(lock_path)


def patch_kit(
    base_path: Path, delta_path: Path, *, output: Path, options: VerifyOptions, allow_downgrade: bool = False
) -> PatchResult:
    """Apply a verified delta to a verified base; ``output`` (may be ``base_path``) is replaced atomically."""
    caps = options.caps
    delta_report = verify_kit(delta_path, options)
    delta_info = delta_report.manifest.delta
    if delta_info is None:
        raise UsageError(f"{delta_path}: not a delta kit (its manifest has no delta block); use it as a full kit")
    with open_kit(base_path) as base_stream, open_kit(delta_path) as delta_stream:
        base = read_metadata(base_stream, caps)
        _, _, base_manifest = check_signed_metadata(base, options.policy)
        base_manifest_sha = hashlib.sha256(base.members[MANIFEST_JSON]).hexdigest()
        if base_manifest_sha != delta_info["baseManifestSha256"]:
            raise PolicyError(
                f"{delta_path}: this delta applies to the kit whose manifest has SHA-256 "
                f"{delta_info['baseManifestSha256'][:16]}… (sequence {delta_info['baseSequence']}), not to "
                f"{base_path} ({base_manifest.kit.name} sequence {base_manifest.kit.sequence})"
            )
        target = target_metadata(delta_stream, delta_report.manifest, caps)
        _, _, target_manifest = check_signed_metadata(target, options.policy)
        check_policy(target_manifest, options)
        if hashlib.sha256(target.members[MANIFEST_JSON]).hexdigest() != delta_info["targetManifestSha256"]:
            raise IntegrityError(f"{delta_path}: target manifest differs from the digest the delta signed")
        if target_manifest.kit.name != base_manifest.kit.name:
            raise PolicyError(
                f"{delta_path}: delta is for kit {target_manifest.kit.name}, base is {base_manifest.kit.name}"
            )
        if target_manifest.kit.sequence <= base_manifest.kit.sequence and not allow_downgrade:
            raise PolicyError(
                f"{delta_path}: target sequence {target_manifest.kit.sequence} does not grow from the base's "
                f"{base_manifest.kit.sequence}; refusing a downgrade (--allow-downgrade to override)"
            )
        delta_files = {f.path: f for f in delta_report.manifest.files if not f.path.startswith(f"{TARGET_DIR}/")}
        base_by_content = {(f.sha256, f.size): f for f in base_manifest.files}
        build = target_manifest.build
        compression = build["compression"]
        from_base = from_delta = 0
        with _patch_lock(output), atomic_output(output) as out:
            writer = KitWriter(
                out,
                level=compression["level"],
                threads=-1 if compression["multithreaded"] else 0,
                mtime=build.get("mtime", 0),
            )
            for item in sorted(target_manifest.files, key=lambda f: f.offset):
                if item.path in delta_files and delta_files[item.path].sha256 == item.sha256:
                    written = copy_member(writer, item.path, delta_stream, delta_files[item.path], caps)
                    from_delta += 1
                elif (item.sha256, item.size) in base_by_content:
                    written = copy_member(
                        writer, item.path, base_stream, base_by_content[(item.sha256, item.size)], caps
                    )
                    from_base += 1
                else:
                    raise IntegrityError(f"{item.path}: neither the base nor the delta holds its content")
                if (written.offset, written.length, written.frame_sha256) != (
                    item.offset,
                    item.length,
                    item.frame_sha256,
                ):
                    raise IntegrityError(f"{item.path}: patched member differs from the signed target (frame digest)")
            for name in target.members:
                writer.add_bytes(name, target.members[name])
            writer.finish()
            written_bytes = writer.offset
    return PatchResult(output, target_manifest, from_base, from_delta, written_bytes)


def target_metadata(delta_stream: BinaryIO, delta_manifest: Manifest, caps: Caps) -> KitMetadata:
    location = reader.read_index(delta_stream, caps)
    by_path = location.index.by_path()
    members: dict[str, bytes] = {}
    prefix = f"{TARGET_DIR}/"
    for name in metadata_names(path[len(prefix) :] for path in by_path if path.startswith(prefix)):
        entry = by_path.get(f"{TARGET_DIR}/{name}")
        if entry is None:
            raise IntegrityError(f"delta kit lacks {TARGET_DIR}/{name}")
        members[name] = reader.read_member(delta_stream, entry, caps)
    envelope = Envelope.from_bytes(members[MANIFEST_DSSE], what=f"{TARGET_DIR}/{MANIFEST_DSSE}")
    manifest = Manifest.from_bytes(members[MANIFEST_JSON], what=f"{TARGET_DIR}/{MANIFEST_JSON}")
    return KitMetadata(location=location, members=members, envelope=envelope, manifest=manifest)


def build_delta(
    spec: Path,
    *,
    keys: list[PrivateKey],
    base_path: Path,
    output: Path,
    full_output: Path | None,
    options: Any,
) -> DeltaResult:
    """``kit build --delta-from``: build the full new kit reusing the base's frames, then cut the delta from it."""
    from kitbuilder.ops.build import build_kit

    directory = check_target(output)  # a bad --out fails before anything is built
    policy = TrustPolicy(keys=tuple(k.public for k in keys), threshold=1)
    base = FrameReuse(base_path, policy)
    try:
        if full_output is not None:
            build_kit(spec, keys=keys, output=full_output, options=options, reuse=base)
            return write_delta(full_output, base, keys=keys, output=output, policy=policy)
        # Without --full-out the full kit lives in a private directory kit creates beside the output
        # (never a fixed name someone could plant), removed at the end; one a killed run left is cleared.
        pattern = temp_pattern(output, DIR_SUFFIX)
        clear_stale(directory, pattern, is_dir=True)
        with scratch_dir(directory, pattern, what=output) as scratch:
            full = scratch / output.name
            build_kit(
                spec, keys=keys, output=full, options=options, reuse=base, detached_provenance=False, shown_as=output
            )
            return write_delta(full, base, keys=keys, output=output, policy=policy)
    finally:
        base.close()

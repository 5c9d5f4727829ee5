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
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kitbuilder import faults
from kitbuilder.archive import reader
from kitbuilder.archive.index import IndexEntry
from kitbuilder.archive.reader import Caps
from kitbuilder.archive.writer import KitWriter
from kitbuilder.atomic import DIR_SUFFIX, atomic_output, check_target, clear_stale, scratch_dir, temp_pattern
from kitbuilder.core.manifest import MANIFEST_JSON, Component, FileEntry, Manifest
from kitbuilder.errors import IntegrityError, KitError, PolicyError, UsageError
from kitbuilder.ops.confined import Directory
from kitbuilder.ops.kitfile import TARGET_DIR, Metadata, open_kit, read_metadata, read_target_metadata
from kitbuilder.ops.verify import VerifyOptions, VerifyReport, check_policy, check_signed_metadata, verify_kit
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import TrustPolicy

DELTA_COMPONENT = Component(id="kit-delta", role="delta")
HASH_CHUNK = 1 << 20


def _sha256_stream(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
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
        try:
            self.metadata = read_metadata(self._stream, self.caps)
            _, _, self.manifest = check_signed_metadata(self.metadata, policy)
        except BaseException:
            self._stream.close()
            raise
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

    def copy_if_known(self, writer: KitWriter, kit_path: str, source: BinaryIO, size: int) -> IndexEntry | None:
        """Hash the open ``source`` (read to its end); when the base holds the same content, copy its frame."""
        return self.copy_if_digest_known(writer, kit_path, _sha256_stream(source), size)

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
    already_patched: bool = False


@dataclass(frozen=True)
class VerifiedDelta:
    """A delta kit verified in full, with the open descriptor it was verified through and its checked target.

    Everything a patch takes from the delta is read through ``stream`` and checked
    against ``manifest`` (the delta's signed manifest) or ``target``: the path is
    never opened again, so a file renamed over it mid-run is never used.
    """

    path: Path
    stream: BinaryIO
    report: VerifyReport
    manifest: Manifest
    base_sha256: str
    target: Metadata
    target_manifest: Manifest
    target_sha256: str

    @property
    def shipped(self) -> dict[str, FileEntry]:
        """The payload files the delta itself carries, by path (its delta/target/ metadata excluded)."""
        return {f.path: f for f in self.manifest.files if not f.path.startswith(f"{TARGET_DIR}/")}

    def check_applies(self, base: Manifest, base_sha256: str, shown: object, *, allow_downgrade: bool) -> None:
        """PolicyError unless this delta turns exactly ``base`` (its manifest digest) into a newer kit of that name."""
        info = self.manifest.delta or {}
        if base_sha256 != self.base_sha256:
            raise PolicyError(
                f"{self.path}: this delta applies to the kit whose manifest has SHA-256 "
                f"{self.base_sha256[:16]}… (sequence {info.get('baseSequence')}), not to "
                f"{shown} ({base.kit.name} sequence {base.kit.sequence})"
            )
        if self.target_manifest.kit.name != base.kit.name:
            raise PolicyError(f"{self.path}: delta is for kit {self.target_manifest.kit.name}, base is {base.kit.name}")
        if self.target_manifest.kit.sequence <= base.kit.sequence and not allow_downgrade:
            raise PolicyError(
                f"{self.path}: target sequence {self.target_manifest.kit.sequence} does not grow from the base's "
                f"{base.kit.sequence}; refusing a downgrade (--allow-downgrade to override)"
            )


@contextlib.contextmanager
def open_verified_delta(path: Path, options: VerifyOptions) -> Iterator[VerifiedDelta]:
    """Open ``path`` once, verify it in full through that descriptor, check its target metadata; yield both.

    The target's ``manifest.json`` must have the digest the delta signed as
    ``targetManifestSha256`` (IntegrityError), and its signed metadata must
    verify and pass the policy checks with the same trust.
    """
    with open_kit(path) as stream:
        report = verify_kit(path, options, stream=stream)
        # Between verifying and using: kill/swap tests hook here; only ``stream`` is used from now on.
        faults.point("patch-verified")
        info = report.manifest.delta
        if info is None:
            raise UsageError(f"{path}: not a delta kit (its manifest has no delta block); use it as a full kit")
        target = read_target_metadata(stream, options.caps)
        target_sha256 = hashlib.sha256(target.members[MANIFEST_JSON]).hexdigest()
        if target_sha256 != info["targetManifestSha256"]:
            raise IntegrityError(
                f"{path}: {TARGET_DIR}/{MANIFEST_JSON} has SHA-256 {target_sha256[:16]}…, the delta signed "
                f"{str(info['targetManifestSha256'])[:16]}… as its target; the delta is corrupt, obtain it again"
            )
        _, _, target_manifest = check_signed_metadata(target, options.policy)
        check_policy(target_manifest, options)
        yield VerifiedDelta(
            path=path,
            stream=stream,
            report=report,
            manifest=report.manifest,
            base_sha256=info["baseManifestSha256"],
            target=target,
            target_manifest=target_manifest,
            target_sha256=target_sha256,
        )


def patch_kit(
    base_path: Path, delta_path: Path, *, output: Path, options: VerifyOptions, allow_downgrade: bool = False
) -> PatchResult:
    """Apply a verified delta to a verified base; ``output`` (may be ``base_path``) is replaced atomically.

    When ``output`` already holds the delta's target kit (a rerun after a completed
    patch), it is verified in full and reported as already patched.
    """
    caps = options.caps
    if output.is_dir():
        raise UsageError(
            f"--out {output}: is a directory; name the new kit file (for example {output}/NEW.kit.tar.zst)"
        )
    check_target(output)  # as for every output: its directory must exist; kit creates none the user did not name
    with open_verified_delta(delta_path, options) as delta, open_kit(base_path) as base_stream:
        base = read_metadata(base_stream, caps)
        _, _, base_manifest = check_signed_metadata(base, options.policy)
        base_sha256 = hashlib.sha256(base.members[MANIFEST_JSON]).hexdigest()
        with (
            _output_directory(output) as directory,
            directory.lock_file(
                f".{output.name}.kit-lock", busy=f"{output}: another kit patch is writing it; wait for it to finish"
            ),
        ):
            # Leftovers of a killed patch (its temporary file) are removed under the lock, by the next run.
            directory.remove_leftovers(output.name)
            if _holds_target(directory, output, delta, options, base_stream):
                manifest = delta.target_manifest
                return PatchResult(output, manifest, 0, 0, 0, already_patched=True)
            delta.check_applies(base_manifest, base_sha256, base_path, allow_downgrade=allow_downgrade)
            result = _write_patched(directory, output, delta, base_stream, base_manifest, caps)
            faults.point("patch-file-renamed")
            return result


@contextlib.contextmanager
def _output_directory(output: Path) -> Iterator[Directory]:
    parent = output.parent if str(output.parent) else Path(".")
    with Directory.open(parent, what="output directory") as directory:
        yield directory


def _holds_target(
    directory: Directory, output: Path, delta: VerifiedDelta, options: VerifyOptions, base_stream: BinaryIO
) -> bool:
    """True when ``output`` already is the delta's target kit, verified in full through one descriptor.

    Another file there is simply replaced; but when the output is the base itself
    (``--in-place``) and names the target without verifying, that error is the answer.
    """
    fd = directory.open_regular(output.name, refuse=UsageError)
    if fd is None:
        return False
    with os.fdopen(fd, "rb") as stream:
        held, base = os.fstat(stream.fileno()), os.fstat(base_stream.fileno())
        is_base = (held.st_dev, held.st_ino) == (base.st_dev, base.st_ino)
        try:
            current = read_metadata(stream, options.caps)
            if hashlib.sha256(current.members[MANIFEST_JSON]).hexdigest() != delta.target_sha256:
                return False
            verify_kit(output, options, stream=stream)
        except KitError:
            if is_base:
                raise
            return False
    return True


def _write_patched(
    directory: Directory,
    output: Path,
    delta: VerifiedDelta,
    base_stream: BinaryIO,
    base_manifest: Manifest,
    caps: Caps,
) -> PatchResult:
    target_manifest = delta.target_manifest
    delta_files = delta.shipped
    base_by_content = {(f.sha256, f.size): f for f in base_manifest.files}
    build = target_manifest.build
    compression = build["compression"]
    from_base = from_delta = 0
    with directory.atomic_file(output.name) as out:
        writer = KitWriter(
            out,
            level=compression["level"],
            threads=-1 if compression["multithreaded"] else 0,
            mtime=build.get("mtime", 0),
        )
        for item in sorted(target_manifest.files, key=lambda f: f.offset):
            if item.path in delta_files and delta_files[item.path].sha256 == item.sha256:
                written = copy_member(writer, item.path, delta.stream, delta_files[item.path], caps)
                from_delta += 1
            elif (item.sha256, item.size) in base_by_content:
                written = copy_member(writer, item.path, base_stream, base_by_content[(item.sha256, item.size)], caps)
                from_base += 1
            else:
                raise IntegrityError(f"{item.path}: neither the base nor the delta holds its content")
            if (written.offset, written.length, written.frame_sha256) != (item.offset, item.length, item.frame_sha256):
                raise IntegrityError(f"{item.path}: patched member differs from the signed target (frame digest)")
            faults.point("patch-file-member")
        for name in delta.target.members:
            writer.add_bytes(name, delta.target.members[name])
        writer.finish()
        written_bytes = writer.offset
    return PatchResult(output, target_manifest, from_base, from_delta, written_bytes)


def _check_distinct(*named: tuple[str, Path | None]) -> None:
    """UsageError when two of the named paths are one file: one output would replace the other, or the base."""
    given = [(option, path) for option, path in named if path is not None]
    for number, (option, path) in enumerate(given):
        for other, other_path in given[number + 1 :]:
            if _one_file(path, other_path):
                raise UsageError(
                    f"{option} {path} and {other} {other_path} name the same file, which would then hold only one "
                    "of them; give each its own path"
                )


def _one_file(first: Path, second: Path) -> bool:
    """The two paths name one file: the same existing file, or the same name in the same directory."""
    with contextlib.suppress(OSError):
        if os.path.samefile(first, second):
            return True
    return first.name == second.name and os.path.realpath(first.parent) == os.path.realpath(second.parent)


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
    _check_distinct(("--out", output), ("--full-out", full_output), ("--delta-from", base_path))
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

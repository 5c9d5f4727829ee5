"""Delta kits (format 2): ship only the frames the base lacks, plus the new kit's signed metadata.

A delta kit is an ordinary signed format-2 kit whose manifest carries a ``delta``
block (the SHA-256 of the one base manifest it applies to, the paths removed).
Its payload is, in the new (target) kit's order, every target payload frame
whose SHA-256 the base does not have, copied byte for byte from the target,

each as the data of a member ``delta/frames/<frame sha256>`` behind a 512-byte
header frame of the delta's own, so that the delta's tar stream is a stream of
whole members and never holds part of the target's payload under its paths;

then the target's metadata members under ``delta/target/`` (laid out as metadata members are), then
the delta's own metadata. ``kit patch`` (``patch_file``, ``patch_dir``) rebuilds
the target from the base's and the delta's frames by their signed digests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kitbuilder import faults
from kitbuilder.archive import layout, reader, reader2, tarfmt
from kitbuilder.archive.index import KitIndex, MemberSpan
from kitbuilder.archive.pool import usable_cores
from kitbuilder.archive.reader import Caps
from kitbuilder.archive.writer2 import FrameMember, KitWriter2, compress_frame, metadata_frames
from kitbuilder.atomic import DIR_SUFFIX, atomic_output, check_target, clear_stale, scratch_dir, temp_pattern
from kitbuilder.core.filelist import FILE_LIST, FileTable, path_order
from kitbuilder.core.manifest import MANIFEST_JSON, Component, FileEntry, Manifest, metadata_names
from kitbuilder.core.manifest_parts import DeltaInfo
from kitbuilder.errors import ArchiveError, FormatError, IntegrityError, PolicyError, UsageError
from kitbuilder.ops.frame_reuse import BaseFrames, FrameMap, full_kit_needed
from kitbuilder.ops.kitfile import (
    TARGET_DIR,
    KitMetadata,
    Metadata,
    open_kit,
    read_metadata,
    read_target_metadata,
)
from kitbuilder.ops.verify import (
    VerifyOptions,
    VerifyReport,
    check_kit_metadata,
    check_policy,
    check_signed_metadata,
    verify_kit,
)
from kitbuilder.trust.keys import PrivateKey
from kitbuilder.trust.signatures import TrustPolicy

DELTA_COMPONENT = Component(id="kit-delta", role="delta")
# Each shipped target frame travels as the data of a member of this name (its frame digest).
FRAMES_DIR = "delta/frames"
FRAME_ROLE = "delta-frame"
TARGET_ROLE = "delta-target"


@dataclass(frozen=True)
class DeltaResult:
    output: Path
    full_output: Path
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    reused: int  # target files none of whose frames is shipped
    delta_bytes: int
    frames_shipped: int = 0
    frames_reused: int = 0


def write_delta(
    full_kit: Path, base: BaseFrames, *, keys: list[PrivateKey], output: Path, policy: TrustPolicy, threads: int = 0
) -> DeltaResult:
    """Write the delta that turns ``base`` into ``full_kit`` (both format 2, verified metadata, same signers)."""

    with open_kit(full_kit) as stream:
        target = read_metadata(stream, base.caps)
        _, _, manifest = check_signed_metadata(target, policy)
        frames = FrameMap(manifest, what=str(full_kit))
        have = {f.sha256 for f in base.frames}
        shipped: list[int] = []
        seen: set[str] = set()
        for number, frame in enumerate(manifest.frames):
            if frame.sha256 not in have and frame.sha256 not in seen:
                seen.add(frame.sha256)
                shipped.append(number)
        added, changed, removed = _summary(base.manifest.files, manifest, have)
        info = DeltaInfo(
            base_manifest_sha256=base.manifest_sha256,
            base_sequence=base.manifest.kit.sequence,
            base_version=base.manifest.kit.version,
            removed=removed,
            target_manifest_sha256=hashlib.sha256(target.members[MANIFEST_JSON]).hexdigest(),
        )
        file_list = target_list(target, stream, base.caps)
        with atomic_output(output) as out:
            size = write_delta_kit(
                out, stream, frames, shipped, target.members, info, keys, threads=threads, file_list=file_list
            )
    return DeltaResult(
        output,
        full_kit,
        added,
        changed,
        removed,
        len(manifest.files) - len(added) - len(changed),
        size,
        len(shipped),
        len(manifest.frames) - len(shipped),
    )


def _summary(
    base: Sequence[FileEntry], target: Manifest, have: set[str]
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Added, changed and removed paths. By content, as a user thinks of it: a file whose content the base lacks is
    new or changed (the frames shipped for it may carry unchanged neighbours of its group too).

    Only the target's files in frames the base lacks (``have``: the base's frame digests), and large ones, can
    hold content the base lacks: a frame the base has decodes to the same bytes there. The two lists are walked
    side by side in path order (``path_order``: each is in archive order, a few sorted runs), so what is held is
    the few files whose content differs from the base's file of the same path, never a set of every path or digest
    of either kit (a million of each: a few changed files spread over every group frame make every file a
    candidate)."""
    old, new = _table(base), _table(target.files)
    fresh_frames = {n for n, frame in enumerate(target.frames) if frame.sha256 not in have}
    removed: list[str] = []
    # The target files whose content the base may lack, with whether the base has a file of that path.
    differing: list[tuple[int, bool]] = []
    olds, news = path_order(old.paths), path_order(new.paths)
    o, n = next(olds, None), next(news, None)
    while o is not None or n is not None:
        if n is None or (o is not None and old.paths[o] < new.paths[n]):
            assert o is not None
            removed.append(old.paths[o])
            o = next(olds, None)
            continue
        same_path = o is not None and old.paths[o] == new.paths[n]
        if new.frame(n) in fresh_frames or layout.is_large(new.size(n)):
            content = (new.sha256(n), new.size(n))
            if o is None or not same_path or (old.sha256(o), old.size(o)) != content:
                differing.append((n, same_path))
        if same_path:
            o = next(olds, None)
        n = next(news, None)
    wanted = {(new.sha256(n), new.size(n)) for n, _ in differing}
    in_base = (
        {(old.sha256(o), old.size(o)) for o in range(len(old)) if (old.sha256(o), old.size(o)) in wanted}
        if wanted
        else set()
    )
    fresh = [(new.paths[n], had) for n, had in differing if (new.sha256(n), new.size(n)) not in in_base]
    added = tuple(sorted(path for path, had in fresh if not had))
    changed = tuple(sorted(path for path, had in fresh if had))
    return added, changed, tuple(removed)


def _table(files: Sequence[FileEntry]) -> FileTable:
    return files if isinstance(files, FileTable) else FileTable.of(files)


@dataclass(frozen=True)
class TargetList:
    """The target's file list for a delta: its size and digest (signed by the target), its bytes in pieces."""

    size: int
    sha256: str
    pieces: Callable[[], Iterator[bytes]]


def target_list(target: KitMetadata, stream: BinaryIO, caps: Caps) -> TargetList | None:
    """The file list of the target kit ``target`` (read from ``stream``) as a delta carries it: read again piece by
    piece when written (each piece checked against the index as it is read; the list was checked against the
    signed manifest when ``target`` was read), never held whole."""
    ref = target.manifest.file_list
    if ref is None:
        return None
    span = target.location.index.locate(FILE_LIST)
    return TargetList(ref.size, ref.sha256, lambda: reader.member_chunks(stream, span, caps))


def write_delta_kit(
    out: BinaryIO,
    stream: BinaryIO,
    frames: FrameMap,
    shipped: list[int],
    target_members: Mapping[str, bytes],
    info: DeltaInfo,
    keys: list[PrivateKey],
    *,
    threads: int = 0,
    file_list: TargetList | None = None,
) -> int:
    """Write a delta kit to ``out``: target frames ``shipped`` (read from the target kit ``stream``), the target
    metadata ``target_members`` (and ``file_list``, streamed) under delta/target/, in metadata order, the delta's
    signed metadata with the ``delta`` block ``info``. Returns the delta's size."""
    from kitbuilder.ops.build import seal

    manifest = frames.manifest
    level = manifest.build.compression.level
    # The roles of the delta's own members (shipped frames, delta/target/): never one per target file.
    roles: dict[str, tuple[str, str]] = {}
    with KitWriter2(out, level=level, threads=threads) as writer:
        for number in shipped:
            _ship_frame(writer, stream, frames, number, level, roles)
        names = metadata_names([*target_members, *([FILE_LIST] if file_list is not None else [])])
        for name in names:
            path = f"{TARGET_DIR}/{name}"
            if name in target_members:
                data = target_members[name]
                _add_single(writer, path, len(data), hashlib.sha256(data).hexdigest(), (data,), level)
            elif name == FILE_LIST and file_list is not None:
                _add_single(writer, path, file_list.size, file_list.sha256, file_list.pieces(), level)
            else:
                continue
            roles[path] = (TARGET_ROLE, DELTA_COMPONENT.id)
        payload = writer.finish_payload()
        files = tuple(
            FileEntry(m.path, m.size, m.sha256, *roles[m.path], frame=m.frame, at=m.at) for m in payload.members
        )
        delta_manifest = Manifest(
            kit=manifest.kit,
            build=manifest.build,
            components=(*manifest.components, DELTA_COMPONENT),
            files=files,
            checks=manifest.checks,
            frames=payload.frames,
            format_version=2,
            delta=info,
        )
        seal(writer, delta_manifest, keys)
        writer.finish()
        return writer.offset


def _ship_frame(
    writer: KitWriter2,
    stream: BinaryIO,
    frames: FrameMap,
    number: int,
    level: int,
    roles: dict[str, tuple[str, str]],
) -> None:
    """Copy target frame ``number`` into the delta verbatim, as the data of member ``delta/frames/<digest>``.

    Every shipped frame travels wrapped, a group too: the delta then never holds part of the target's payload
    under the target's paths (half an OCI layout, an SBOM without what it describes), which ``kit verify``
    would rightly judge as a kit; it holds frames, named by digest, behind 512-byte header frames of its own.
    """
    frame = frames.frames[number]
    # The frame is the target kit's own, just written by this build: decoded only to digest its content.
    decoded = reader2.read_frame(stream, frame, number, max_window=Caps().max_window)
    name = frame_member_name(frame.sha256)
    header = compress_frame(tarfmt.build_header(name, frame.size, 0), level)
    member = FrameMember(name, 0, frame.size, hashlib.sha256(decoded).hexdigest())
    writer.add_frame(header, size=layout.BLOCK, sha256=hashlib.sha256(header).hexdigest(), members=[member])
    roles[name] = (FRAME_ROLE, DELTA_COMPONENT.id)
    writer.add_frame_range(stream.fileno(), frame.offset, length=frame.length, size=frame.size, sha256=frame.sha256)


def frame_member_name(sha256: str) -> str:
    """The delta member that carries the target frame with this compressed-bytes digest."""
    return f"{FRAMES_DIR}/{sha256}"


def carried_frames(manifest: Manifest, path: Path) -> dict[str, MemberSpan]:
    """The target frames a verified delta carries, by digest: each ``delta/frames/<sha256>`` member's span.

    The member's name is the one thing that says which target frame it is, and directory mode takes the frame by
    that name, while file mode takes frames by the delta's signed frame digests. So the two must agree: the member
    is a header frame then exactly one data frame whose signed digest is the name and which decodes to the
    member's bytes; else the delta is refused [4] before either mode uses it.
    """
    frames = FrameMap(manifest, what=str(path))
    carried: dict[str, MemberSpan] = {}
    for entry in manifest.files:
        if not entry.path.startswith(f"{FRAMES_DIR}/"):
            continue
        span = frames.spans[entry.path]
        data = span.frames[1:]
        digest = entry.path[len(FRAMES_DIR) + 1 :]
        if len(data) != 1 or data[0].sha256 != digest or data[0].size != entry.size:
            raise IntegrityError(
                f"{path}: {entry.path}: does not hold the frame its name gives (its data is "
                f"{len(data)} frame(s), sha256 {data[0].sha256[:16] if data else '-'}…); the delta is corrupt or "
                "was not made by kit: obtain it again"
            )
        carried[digest] = span
    return carried


def _add_single(writer: KitWriter2, path: str, size: int, sha256: str, pieces: Iterable[bytes], level: int) -> None:
    """A payload member in frames of its own, laid out and compressed as a metadata member is (one frame, or from
    LARGE on a header frame and CHUNK frames): what patch writes for it in the target is the same layout."""
    for number, raw in enumerate(metadata_frames(path, size, pieces)):
        packed = compress_frame(raw, level)
        members = [FrameMember(path, 0, size, sha256)] if number == 0 else []
        writer.add_frame(packed, size=len(raw), sha256=hashlib.sha256(packed).hexdigest(), members=members)


# ---------------------------------------------------------------------------------------------------------------
# the verified delta, as kit patch (file and directory mode) uses it


@dataclass(frozen=True)
class DeltaMetadata:
    """A delta kit whose signed metadata is checked, with the open descriptor it was read through, its full index
    (checked against ``manifest``) and its checked target metadata.

    Everything a patch takes from the delta is read through ``stream`` and checked against ``manifest`` (the delta's
    signed manifest) or ``target``: the path is never opened again, so a file renamed over it mid-run is never used.
    File mode: ``target_manifest`` lacks its files until ``target_files`` has read the target's file list.
    """

    path: Path
    stream: BinaryIO
    manifest: Manifest
    index: KitIndex
    base_sha256: str
    target: Metadata
    target_manifest: Manifest
    target_sha256: str
    carried: dict[str, MemberSpan]  # target frame digest -> the delta member carrying it (``carried_frames``)

    def target_files(self, policy: TrustPolicy) -> Manifest:
        """The target's signed manifest with its files: its file list read through ``stream``, bounded by the
        signed count, parsed and checked against the manifest and SHA256SUMS as any kit's (``load_files``), the
        signatures checked again with it (``check_signed_metadata``)."""
        if not self.target.files_pending:
            return self.target_manifest
        return check_signed_metadata(self.target, policy)[2]

    def check_applies(self, base: Manifest, base_sha256: str, shown: object, *, allow_downgrade: bool) -> None:
        """PolicyError unless this delta turns exactly ``base`` (its manifest digest) into a newer kit of that name."""
        sequence = None if self.manifest.delta is None else self.manifest.delta.base_sequence
        if base_sha256 != self.base_sha256:
            raise PolicyError(
                f"{self.path}: this delta applies to the kit whose manifest has SHA-256 "
                f"{self.base_sha256[:16]}… (sequence {sequence}), not to "
                f"{shown} ({base.kit.name} sequence {base.kit.sequence})"
            )
        if self.target_manifest.kit.name != base.kit.name:
            raise PolicyError(f"{self.path}: delta is for kit {self.target_manifest.kit.name}, base is {base.kit.name}")
        if self.target_manifest.kit.sequence <= base.kit.sequence and not allow_downgrade:
            raise PolicyError(
                f"{self.path}: target sequence {self.target_manifest.kit.sequence} does not grow from the base's "
                f"{base.kit.sequence}; refusing a downgrade (--allow-downgrade to override)"
            )


@dataclass(frozen=True)
class VerifiedDelta(DeltaMetadata):
    """A delta kit verified in full (``kit verify``'s report: every frame and member decoded and checked), as
    directory mode needs it: it stages files from the carried frames' decompressed contents."""

    report: VerifyReport


@contextlib.contextmanager
def open_verified_delta(path: Path, options: VerifyOptions) -> Iterator[VerifiedDelta]:
    """Open ``path`` once, verify it in full through that descriptor, check its target metadata (``_check_delta``);
    yield both."""
    with open_kit(path) as stream:
        report = verify_kit(path, options, stream=stream)
        # Between verifying and using: kill/swap tests hook here; only ``stream`` is used from now on.
        faults.point("patch-verified")
        index = read_metadata(stream, options.caps).location.index
        checked = _check_delta(path, stream, report.manifest, index, options, keep_file_list=True)
        yield VerifiedDelta(**{f.name: getattr(checked, f.name) for f in dataclasses.fields(checked)}, report=report)


@contextlib.contextmanager
def open_delta_metadata(path: Path, options: VerifyOptions) -> Iterator[DeltaMetadata]:
    """Open ``path`` once and check its signed metadata as ``kit verify`` does (signatures, manifest, file list,
    index, policy, anti-rollback: recorded once all passed), but not its payload; check its target metadata.

    For ``kit patch`` on a kit file, which decompresses nothing of the payload: every byte it takes from the delta
    is checked against a signed digest before it lands under the final name (a carried frame: the target's signed
    frame digest, hashed as it lies in the output; a ``delta/target/`` member: its content digest as it is read,
    its frames' digests as they are copied). The delta's frames must tile and match its signed manifest and file
    list (checked on the index, as verify checks it), and the carried members' header frames are checked here
    (``_check_carried_frames``). What only a full scan adds is decoding the carried data frames the target takes
    (their digests are the target's signed ones: what lands is what the target's signer built) and the delta
    file's own digest.
    """
    with open_kit(path) as stream:
        checked = check_kit_metadata(stream, options)
        faults.point("patch-verified")
        manifest = checked.manifest
        # The target's file list is read by the caller (``target_files``), while it copies the payload.
        delta = _check_delta(path, stream, manifest, checked.metadata.location.index, options, keep_file_list=False)
        _check_carried_frames(delta, options.caps)
        if options.freshness is not None:
            # As verify_kit records it: the delta's kit block is the new kit's (docs/delta.md, anti-rollback).
            options.freshness.record(manifest.kit.name, manifest.kit.channel, manifest.kit.sequence, options.now)
        yield delta


def _check_carried_frames(delta: DeltaMetadata, caps: Caps) -> None:
    """What a full verify would check of the ``delta/frames/…`` members that file mode does not copy: each member's
    header frame (its signed digest, then the exact tar header kit writes for that name and size) and the data frame
    of any member the target does not take (its signed digest, decoded). A few hundred small reads for a delta of a
    1% change; the data frames the target takes are hashed as they are copied, not here."""
    wanted = {frame.sha256 for frame in delta.target_manifest.frames}
    window = caps.max_window
    for digest, span in delta.carried.items():
        try:
            header = reader2.read_frame(delta.stream, span.frames[0], span.frame, max_window=window, against="signed")
            reader2.check_member(header, span, against="signed")
            if digest not in wanted:
                reader2.read_frame(delta.stream, span.frames[1], span.frame + 1, max_window=window, against="signed")
        except (ArchiveError, IntegrityError) as exc:
            raise type(exc)(f"{delta.path}: {span.path}: {exc.message}; the delta is corrupt, obtain it again") from exc


def _check_delta(
    path: Path, stream: BinaryIO, manifest: Manifest, index: KitIndex, options: VerifyOptions, *, keep_file_list: bool
) -> DeltaMetadata:
    """The delta's own rules on its checked ``manifest`` and ``index``, and its target metadata, checked.

    The target's ``manifest.json`` must have the digest the delta signed as ``targetManifestSha256``
    (IntegrityError), and its signed metadata must verify and pass the policy checks with the same trust.
    """
    info = manifest.delta
    if manifest.format_version != 2:
        raise full_kit_needed(path, "the delta")
    if info is None:
        raise UsageError(f"{path}: not a delta kit (its manifest has no delta block); use it as a full kit")
    target = read_target_metadata(
        stream, options.caps, index=index, keep_file_list=keep_file_list, defer_files=not keep_file_list
    )
    target_sha256 = hashlib.sha256(target.members[MANIFEST_JSON]).hexdigest()
    if info.target_manifest_sha256 is None:
        raise FormatError(
            f"{path}: {MANIFEST_JSON}: delta: targetManifestSha256 is missing, so {TARGET_DIR}/{MANIFEST_JSON} "
            "cannot be checked; rebuild the delta with this kit"
        )
    if target_sha256 != info.target_manifest_sha256:
        raise IntegrityError(
            f"{path}: {TARGET_DIR}/{MANIFEST_JSON} has SHA-256 {target_sha256[:16]}…, the delta signed "
            f"{info.target_manifest_sha256[:16]}… as its target; the delta is corrupt, obtain it again"
        )
    _, _, target_manifest = check_signed_metadata(target, options.policy, files=keep_file_list)
    check_policy(target_manifest, options)
    carried = carried_frames(manifest, path)
    return DeltaMetadata(
        path=path,
        stream=stream,
        manifest=manifest,
        index=index,
        base_sha256=info.base_manifest_sha256,
        target=target,
        target_manifest=target_manifest,
        target_sha256=target_sha256,
        carried=carried,
    )


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
    max_members: int | None = None,
) -> DeltaResult:
    """``kit build --delta-from``: build the full new kit reusing the base's frames, then cut the delta from it."""
    from kitbuilder.ops.build import build_kit

    directory = check_target(output)  # a bad --out fails before anything is built
    _check_distinct(("--out", output), ("--full-out", full_output), ("--delta-from", base_path))
    policy = TrustPolicy(keys=tuple(k.public for k in keys), threshold=1)
    # The base and the new full kit are read back under --max-members (a kit of more files needs it raised).
    base = BaseFrames(base_path, policy, Caps(max_members=max_members) if max_members is not None else None)
    threads = usable_cores() if options.threads is None or options.threads < 0 else options.threads
    try:
        if full_output is not None:
            build_kit(spec, keys=keys, output=full_output, options=options, reuse=base)
            return write_delta(full_output, base, keys=keys, output=output, policy=policy, threads=threads)
        # Without --full-out the full kit lives in a private directory kit creates beside the output
        # (never a fixed name someone could plant), removed at the end; one a killed run left is cleared.
        pattern = temp_pattern(output, DIR_SUFFIX)
        clear_stale(directory, pattern, is_dir=True)
        with scratch_dir(directory, pattern, what=output) as scratch:
            full = scratch / output.name
            build_kit(
                spec, keys=keys, output=full, options=options, reuse=base, detached_provenance=False, shown_as=output
            )
            return write_delta(full, base, keys=keys, output=output, policy=policy, threads=threads)
    finally:
        base.close()

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
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from kitbuilder.archive import layout, reader, reader2, tarfmt
from kitbuilder.archive.index import MemberSpan
from kitbuilder.archive.pool import usable_cores
from kitbuilder.archive.reader import Caps
from kitbuilder.archive.writer2 import FrameMember, KitWriter2, compress_frame, metadata_frames
from kitbuilder.atomic import DIR_SUFFIX, atomic_output, check_target, clear_stale, scratch_dir, temp_pattern
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import MANIFEST_JSON, SHA256SUMS, Component, FileEntry, Manifest, metadata_names
from kitbuilder.core.manifest_parts import DeltaInfo
from kitbuilder.errors import IntegrityError, UsageError
from kitbuilder.ops.delta_content import CONTENT, ContentShipper, plan_files
from kitbuilder.ops.frame_reuse import BaseFrames, FrameMap
from kitbuilder.ops.kitfile import (
    TARGET_DIR,
    KitMetadata,
    open_kit,
    read_metadata,
)
from kitbuilder.ops.verify import (
    check_signed_metadata,
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
    patches: int = 0  # changed files carried as content deltas (delta/patches/...)
    files_shipped: int = 0  # files carried whole (delta/files/...), their group frame rebuilt by kit patch
    frames_rebuilt: int = 0  # target frames the delta carries as those members instead of verbatim


def write_delta(
    full_kit: Path,
    base: BaseFrames,
    *,
    keys: list[PrivateKey],
    output: Path,
    policy: TrustPolicy,
    threads: int = 0,
    mode: str = CONTENT,
) -> DeltaResult:
    """Write the delta that turns ``base`` into ``full_kit`` (both format 2, verified metadata, same signers)."""

    with open_kit(full_kit) as stream:
        target = read_metadata(stream, base.caps)
        _, _, manifest = check_signed_metadata(target, policy)
        # Checked; the delta carries SHA256SUMS (~95 bytes a file) read again piece by piece, as the file list, so
        # it is let go before the base's list is read for the plan.
        sums = streamed_member(target, stream, base.caps, SHA256SUMS)
        target.members = {name: data for name, data in target.members.items() if name != SHA256SUMS}
        frames = FrameMap(manifest, what=str(full_kit))
        have = {f.sha256 for f in base.frames}
        shipped: list[int] = []  # each frame the base lacks, once (the first of equal frames)
        fresh: set[int] = set()  # every frame the base lacks
        seen: set[str] = set()
        for number, frame in enumerate(manifest.frames):
            if frame.sha256 not in have:
                fresh.add(number)
                if frame.sha256 not in seen:
                    seen.add(frame.sha256)
                    shipped.append(number)
        plan = plan_files(base.files(), manifest.files, fresh)
        added, changed, removed = plan.added, plan.changed, plan.removed
        info = DeltaInfo(
            base_manifest_sha256=base.manifest_sha256,
            base_sequence=base.manifest.kit.sequence,
            base_version=base.manifest.kit.version,
            removed=removed,
            target_manifest_sha256=hashlib.sha256(target.members[MANIFEST_JSON]).hexdigest(),
            frames=mode,
        )
        file_list = target_list(target, stream, base.caps)
        level = manifest.build.compression.level
        content = ContentShipper(base, frames, plan, level) if mode == CONTENT else None
        del plan
        with atomic_output(output) as out:
            size = write_delta_kit(
                out,
                stream,
                frames,
                shipped,
                target.members,
                info,
                keys,
                threads=threads,
                file_list=file_list,
                content=content,
                streamed={SHA256SUMS: sums},
            )
    return DeltaResult(
        output,
        full_kit,
        added,
        changed,
        removed,
        len(manifest.files) - len(added) - len(changed),
        size,
        len(shipped) - (content.rebuilt if content else 0),
        len(manifest.frames) - len(shipped),
        content.patches if content else 0,
        content.files if content else 0,
        content.rebuilt if content else 0,
    )


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


def streamed_member(target: KitMetadata, stream: BinaryIO, caps: Caps, name: str) -> TargetList:
    """Metadata member ``name`` of the target kit ``target`` (read and checked when ``target`` was) as a delta
    carries it: its size and digest from those bytes, its bytes read again piece by piece (each piece checked
    against the index) when written."""
    data = target.members[name]
    span = target.location.index.locate(name)
    return TargetList(len(data), hashlib.sha256(data).hexdigest(), lambda: reader.member_chunks(stream, span, caps))


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
    content: ContentShipper | None = None,
    streamed: Mapping[str, TargetList] | None = None,
) -> int:
    """Write a delta kit to ``out``: target frames ``shipped`` (read from the target kit ``stream``; with
    ``content``, a group frame as the members that let kit patch rebuild it, when it chooses so), the target
    metadata ``target_members`` (and ``file_list``, streamed) under delta/target/, in metadata order, the delta's
    signed metadata with the ``delta`` block ``info``; ``streamed``: target metadata members not in ``target_members``,
    written piece by piece as ``file_list`` is. Returns the delta's size."""
    from kitbuilder.ops.build import seal

    manifest = frames.manifest
    level = manifest.build.compression.level
    # The roles of the delta's own members (shipped frames, delta/target/): never one per target file.
    roles: dict[str, tuple[str, str]] = {}
    with KitWriter2(out, level=level, threads=threads) as writer:
        for number in shipped:
            _ship_frame(writer, stream, frames, number, level, roles, content)
        pieces = dict(streamed or {})
        if file_list is not None:
            pieces[FILE_LIST] = file_list
        for name in metadata_names([*target_members, *pieces]):
            path = f"{TARGET_DIR}/{name}"
            if name in target_members:
                data = target_members[name]
                _add_single(writer, path, len(data), hashlib.sha256(data).hexdigest(), (data,), level)
            elif name in pieces:
                item = pieces[name]
                _add_single(writer, path, item.size, item.sha256, item.pieces(), level)
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
    content: ContentShipper | None = None,
) -> None:
    """Copy target frame ``number`` into the delta verbatim, as the data of member ``delta/frames/<digest>``; or,
    when ``content`` chooses so, as the patches and files of its members the base lacks (``delta_content``).

    Every shipped frame travels wrapped, a group too: the delta then never holds part of the target's payload
    under the target's paths (half an OCI layout, an SBOM without what it describes), which ``kit verify``
    would rightly judge as a kit; it holds frames, named by digest, behind 512-byte header frames of its own.
    """
    frame = frames.frames[number]
    # The frame is the target kit's own, just written by this build: decoded only to digest its content.
    decoded = reader2.read_frame(stream, frame, number, max_window=Caps().max_window)
    if content is not None and (members := content.members_for(number, decoded)) is not None:
        for item in members:
            writer.add_bytes(item.name, item.data)
            roles[item.name] = (item.role, DELTA_COMPONENT.id)
        return
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
    mode: str = CONTENT,
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
            return write_delta(full_output, base, keys=keys, output=output, policy=policy, threads=threads, mode=mode)
        # Without --full-out the full kit lives in a private directory kit creates beside the output
        # (never a fixed name someone could plant), removed at the end; one a killed run left is cleared.
        pattern = temp_pattern(output, DIR_SUFFIX)
        clear_stale(directory, pattern, is_dir=True)
        with scratch_dir(directory, pattern, what=output) as scratch:
            full = scratch / output.name
            build_kit(
                spec, keys=keys, output=full, options=options, reuse=base, detached_provenance=False, shown_as=output
            )
            return write_delta(full, base, keys=keys, output=output, policy=policy, threads=threads, mode=mode)
    finally:
        base.close()

"""kit patch on a kit file (format 2): the new kit assembled from the base's and the delta's frames.

Each payload frame of the target (its signed manifest's ``frames``) is copied
from the base or the delta by its signed SHA-256, never decompressed: the
digest of the bytes that land in the output is the check (``framecopy``); or,
for a content delta's changed groups, made again from the base's contents and
the delta's and checked against the same signed digest (``frame_rebuild``).
Both write into the new file at the offsets the target's signed frame table
gives, side by side. The target's metadata members (``delta/target/…`` in the
delta, verified) are then written as one frame each, compressed as a full
build compresses them, then the end-of-archive frame, the index and the footer.
Same libzstd and level as the build: the result is the full build's bytes.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import hashlib
import os
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from kitbuilder import faults
from kitbuilder.archive import layout, reader, tarfmt, zstdframes
from kitbuilder.archive.index import KitIndex, MemberEntry, MemberList, MemberSpan
from kitbuilder.archive.locate import Caps
from kitbuilder.archive.writer2 import compress_frame, metadata_frames
from kitbuilder.atomic import check_target
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import MANIFEST_JSON, FileEntry, FrameEntry, Manifest, MetadataBudget, metadata_names
from kitbuilder.errors import ArchiveError, IntegrityError, KitError, UsageError
from kitbuilder.ops.confined import Directory, host_error
from kitbuilder.ops.delta_open import DeltaMetadata, open_delta_metadata
from kitbuilder.ops.frame_rebuild import FrameRebuilder
from kitbuilder.ops.frame_reuse import check_full_kit, full_kit_needed
from kitbuilder.ops.framecopy import Span, copy_frames, copy_placed
from kitbuilder.ops.kitfile import TARGET_DIR, Metadata, open_kit, read_metadata
from kitbuilder.ops.verify import VerifyOptions, verify_kit


@dataclass(frozen=True)
class PatchResult:
    output: Path
    manifest: Manifest
    copied_from_base: int  # payload frames
    copied_from_delta: int  # payload frames the delta carries verbatim
    bytes_written: int
    already_patched: bool = False
    rebuilt: int = 0  # payload frames made again from contents (a content delta's changed groups)


def patch_kit(
    base_path: Path,
    delta_path: Path,
    *,
    output: Path,
    options: VerifyOptions,
    allow_downgrade: bool = False,
    threads: int = 0,
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
    with open_delta_metadata(delta_path, options) as delta, open_kit(base_path) as base_stream:
        base_manifest, base_sha256 = _base_manifest(base_stream, caps, base_path)
        with (
            _output_directory(output) as directory,
            directory.lock_file(
                f".{output.name}.kit-lock", busy=f"{output}: another kit patch is writing it; wait for it to finish"
            ),
        ):
            # Leftovers of a killed patch (its temporary file) are removed under the lock, by the next run.
            directory.remove_leftovers(output.name)
            if output == base_path:
                _check_in_place(directory, output, base_stream)
            if _holds_target(directory, output, delta, options, base_stream):
                return PatchResult(output, delta.target_manifest, 0, 0, 0, already_patched=True)
            delta.check_applies(base_manifest, base_sha256, base_path, allow_downgrade=allow_downgrade)
            target = _TargetFiles(delta, options)
            sources = _Sources(delta, base_path, base_stream, base_manifest, output, caps, target)
            result = _write_patched(directory, output, delta, sources, threads, options)
            faults.point("patch-file-renamed")
            return result


def _base_manifest(stream: BinaryIO, caps: Caps, base_path: Path) -> tuple[Manifest, str]:
    """The base's ``manifest.json``, parsed, and its SHA-256: the one base document a file patch uses.

    The base is not verified again. Its manifest is bound by digest to the delta's signed ``baseManifestSha256``
    (``VerifiedDelta.check_applies``, before anything is written), which makes its frame table as trusted as the
    delta's signature; every frame then copied from the base must have the digest the *target* signs
    (``framecopy``). So its signatures, SHA256SUMS, file list and payload are not read: they could only refuse a
    base whose copied frames are checked anyway, and reading them costs time (and memory) in the number of files.
    """
    index = reader.read_index(stream, caps).index
    try:
        entry = index.locate(MANIFEST_JSON)
    except (KeyError, StopIteration):
        raise ArchiveError(f"{base_path}: kit index has no {MANIFEST_JSON}: not a complete kit") from None
    if index.format_version != 2:
        raise full_kit_needed(base_path, "the base")
    # Format 2: the manifest grows with the frames only (the files are in its signed file list, not read here).
    budget = MetadataBudget(0, frames=len(index.frames), format_version=2)
    budget.check_size(MANIFEST_JSON, entry.size)
    data = reader.read_member(stream, entry, caps)
    manifest = Manifest.from_bytes(data, what=f"{base_path}: {MANIFEST_JSON}", limits=budget.manifest_limits())
    check_full_kit(manifest, base_path, "the base")
    return manifest, hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def _output_directory(output: Path) -> Iterator[Directory]:
    parent = output.parent if str(output.parent) else Path(".")
    with Directory.open(parent, what="output directory") as directory:
        yield directory


def _check_in_place(directory: Directory, output: Path, base_stream: BinaryIO) -> None:
    """With --in-place the name must hold the very file verified as the base: the new kit is renamed over the
    name, so through a symbolic link it would replace the link and leave the kit it points to as it was."""
    try:
        held = os.stat(output.name, dir_fd=directory.fd, follow_symlinks=False)
    except OSError as exc:
        raise host_error(exc, str(output), "read") from exc
    base = os.fstat(base_stream.fileno())
    if stat.S_ISLNK(held.st_mode):
        raise UsageError(
            f"{output}: is a symbolic link; --in-place replaces the kit file itself: name the file it points to "
            f"({os.path.realpath(output)}), or write the new kit elsewhere with --out"
        )
    if (held.st_dev, held.st_ino) != (base.st_dev, base.st_ino):
        raise UsageError(f"{output}: was replaced by another file while kit patch read it; rerun")


def _holds_target(
    directory: Directory, output: Path, delta: DeltaMetadata, options: VerifyOptions, base_stream: BinaryIO
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


class _Sources:
    """Where each frame digest can be copied from: the base's signed frames, then the delta's."""

    def __init__(
        self,
        delta: DeltaMetadata,
        base_path: Path,
        base_stream: BinaryIO,
        base: Manifest,
        output: Path,
        caps: Caps,
        target_files: _TargetFiles,
    ) -> None:
        self.delta = delta
        self.target_files = target_files
        # Group frames a content delta carries as their members' contents: rebuilt into the new kit
        # (ops/frame_rebuild.py) while the frames below are copied into it.
        self.rebuilt = FrameRebuilder(delta, base_path, base_stream, base, output, caps, target_files)
        self.base_path = base_path
        self.base_fd = base_stream.fileno()
        self.delta_fd = delta.stream.fileno()
        # Signed on both sides: the base's manifest (verified above) and the delta's (verified in full).
        self.base = {f.sha256: f for f in base.frames}
        # The target frames the delta carries (each ``delta/frames/<digest>`` member's one data frame, bound to its
        # name when the delta was opened): the same frames directory mode takes, by the same digests.
        self.shipped = {digest: span.frames[1] for digest, span in delta.carried.items()}

    def span(self, number: int, frame: FrameEntry, what: object) -> tuple[Span | None, bool]:
        """The span that copies target frame ``number`` and whether it comes from the base; None for a frame to
        rebuild (a content delta's), IntegrityError for one that neither kit holds and no delta lets be rebuilt."""
        # Base first: its frames lie in target order, so long runs of them are one kernel copy each.
        for table, fd, name, from_base in (
            (self.base, self.base_fd, str(self.base_path), True),
            (self.shipped, self.delta_fd, str(self.delta.path), False),
        ):
            found = table.get(frame.sha256)
            if found is None:
                continue
            if (found.length, found.size) != (frame.length, frame.size):
                raise IntegrityError(
                    f"{name}: frame at offset {found.offset} has the digest of target frame {number} ({what}) but "
                    f"{found.length} bytes (decoding to {found.size}), the target signs {frame.length} ({frame.size})"
                )
            label = _Said(functools.partial("{}: frame of {}".format, name, what))
            return Span(fd, found.offset, found.length, frame.sha256, label, name), from_base
        if self.rebuilt.can_rebuild:
            return None, False
        raise self.not_held(number, frame, what)

    def not_held(self, number: int, frame: FrameEntry, what: object) -> IntegrityError:
        return IntegrityError(
            f"{self.delta.path}: target frame {number} ({what}, sha256 {frame.sha256[:16]}…) is neither in the base "
            f"{self.base_path} nor in the delta; the delta was not made for this base: obtain the matching one"
        )


class _Stopped(Exception):
    """The copy was asked to stop (the target's file list failed its checks): its error is the one raised."""


class _Copy:
    """``copy_placed`` on a thread of its own; ``result`` waits for it and raises what it raised."""

    def __init__(self, placed: list[tuple[int, Span]], out: int, shown: str, threads: int) -> None:
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(placed, out, shown, threads), name="kit-patch-copy")
        self._thread.start()

    def _run(self, placed: list[tuple[int, Span]], out: int, shown: str, threads: int) -> None:
        try:
            copy_placed(placed, out, out_name=shown, threads=threads, on_run=self._after_run)
        except BaseException as exc:  # handed to the main thread by result()
            self._error = exc

    def _after_run(self) -> None:
        faults.point("patch-file-frames")
        if self._stopping.is_set():
            raise _Stopped

    def stop(self) -> None:
        """Stop handing out runs and wait until no worker writes to the output any more (its descriptor is closed
        next, and its number may then name another file)."""
        self._stopping.set()
        self._thread.join()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


class _Names:
    """What each target payload frame holds, for messages: its first member and how many more (a group), or a
    large member's header or chunk. Worked out on the first call only (one pass over the signed file list, a
    dictionary entry per frame): a patch that succeeds names no frame. The layout itself is checked when the index
    is built (``check_tiling``), not here."""

    def __init__(self, target: Metadata) -> None:
        self._target = target  # its manifest gains its files once the file list is read (Metadata.files_pending)
        self._first: dict[int, tuple[FileEntry, int]] | None = None
        self._starts: list[int] = []

    def __call__(self, number: int) -> str:
        if self._target.files_pending:
            return f"frame {number}"
        if self._first is None:
            self._first = {}
            for entry in self._target.manifest.files:
                at = entry.frame or 0
                found = self._first.get(at)
                self._first[at] = (entry, 1) if found is None else (found[0], found[1] + 1)
            self._starts = sorted(self._first)
        frames = self._target.manifest.frames
        found = self._first.get(number)
        if found is None:  # a chunk: of the large member whose header frame comes last before it
            before = self._starts[max(0, bisect.bisect_left(self._starts, number) - 1)] if self._starts else number
            return (
                f"{self._first[before][0].path} chunk {number - before - 1}" if before < number else f"frame {number}"
            )
        entry, count = found
        if number < len(frames) and entry.at + layout.member_bytes(entry.size) > frames[number].size:
            return f"{entry.path} header"
        return entry.path + (f" and {count - 1} more" if count > 1 else "")


class _TargetFiles:
    """The target's signed manifest with its files, read once (``DeltaMetadata.target_files``): by the frame
    rebuilder before the copy when a content delta needs it, else while the payload is copied."""

    def __init__(self, delta: DeltaMetadata, options: VerifyOptions) -> None:
        self._delta = delta
        self._options = options
        self._read: Manifest | None = None

    def __call__(self) -> Manifest:
        if self._read is None:
            self._read = self._delta.target_files(self._options.policy)
        return self._read


@dataclass(frozen=True)
class _Said:
    """Text made when it is shown (an error message), not when the frame is planned: ``f"{_Said(...)}"``."""

    make: Callable[[], str]

    def __str__(self) -> str:
        return self.make()


def _write_patched(
    directory: Directory, output: Path, delta: DeltaMetadata, sources: _Sources, threads: int, options: VerifyOptions
) -> PatchResult:
    head = delta.target_manifest  # signed; its file list is read while the payload is copied
    describe = _Names(delta.target)
    placed: list[tuple[int, Span]] = []
    # Frames to rebuild (a content delta's): the target frames (number, signed entry) of each digest.
    places: dict[str, list[tuple[int, FrameEntry]]] = {}
    from_base = 0
    end = 0
    for number, frame in enumerate(head.frames):
        if frame.offset != end:
            raise IntegrityError(
                f"{delta.path}: the target's signed frame {number} is not where frame {number - 1} ends"
            )
        end += frame.length
        span, base = sources.span(number, frame, _Said(functools.partial(describe, number)))
        if span is None:
            places.setdefault(frame.sha256, []).append((number, frame))
            continue
        placed.append((frame.offset, span))
        from_base += base
    level = head.build.compression.level
    shown = str(output)
    caps = options.caps
    with directory.atomic_file(output.name) as out:
        out.flush()
        # The frames the base and the delta hold are copied and hashed by worker threads from the start, while this
        # thread reads and checks the target's file list and rebuilds the frames a content delta carries as
        # contents into the gaps the copy leaves: no phase waits for another. Nothing is renamed unless all
        # succeed; on any failure the copy is stopped before the file is closed.
        copy = _Copy(placed, out.fileno(), shown, threads)
        try:
            target = sources.target_files()
            rebuilt = sources.rebuilt.rebuild(out.fileno(), places)
            for digest, ((number, frame), *_) in places.items():
                if digest not in rebuilt:
                    raise sources.not_held(number, frame, _Said(functools.partial(describe, number)))
            # Inside: a signal while this thread waits for the copy stops it too, before the file is closed.
            copy.result()
        except BaseException:
            copy.stop()
            raise
        faults.point("patch-file-payload")
        out.seek(end)
        written = list(target.frames)
        metadata: list[MemberEntry] = []  # the payload members are the target's file list's, made on access
        position = end
        for name in _metadata_order(delta):
            position = _write_member(out, name, delta, written, metadata, position, level, shown, threads, caps)
            faults.point("patch-file-member")
        closing = compress_frame(tarfmt.END_OF_ARCHIVE, level)
        out.write(closing)
        written.append(
            FrameEntry(position, len(closing), len(tarfmt.END_OF_ARCHIVE), hashlib.sha256(closing).hexdigest())
        )
        position += len(closing)
        index = KitIndex.v2(tuple(written), MemberList.of_files(target.files, tuple(metadata)), len(written) - 1)
        try:
            index.check_tiling()
        except ArchiveError as exc:
            raise IntegrityError(f"{delta.path}: the target's signed layout is not a kit ({exc.message})") from exc
        out.write(zstdframes.skippable_frame(zstdframes.INDEX_MAGIC, index.to_bytes()))
        out.write(zstdframes.footer_frame(position))
        try:
            out.flush()
            size = out.tell()
        except OSError as exc:
            raise host_error(exc, shown, "write") from exc
    remade = sum(len(at) for at in places.values())
    return PatchResult(output, target, from_base, len(target.frames) - from_base - remade, size, rebuilt=remade)


def _metadata_order(delta: DeltaMetadata) -> tuple[str, ...]:
    """The target's metadata members in the order a build writes them (its file list is not held in memory)."""
    members = list(delta.target.members)
    if delta.target_manifest.file_list is not None and FILE_LIST not in delta.target.members:
        members.append(FILE_LIST)
    return metadata_names(members)


def _write_member(
    out: BinaryIO,
    name: str,
    delta: DeltaMetadata,
    written: list[FrameEntry],
    metadata: list[MemberEntry],
    position: int,
    level: int,
    shown: str,
    threads: int,
    caps: Caps,
) -> int:
    """Write the target's metadata member ``name`` at ``position`` as a build lays it out; return where it ends.

    A member under LARGE is one frame holding its tar header, so it is compressed here from its checked bytes. A
    larger one (a file list or SHA256SUMS of many files) is a header frame, compressed here, then its padded data in
    CHUNK frames, which are the very frames the delta carries for ``delta/target/<name>`` (the header is the only
    frame that names the member): those are copied verbatim and each must hash, as written, to the delta's signed
    frame digest, whose content was decoded and checked against the target's signed digest when the target
    metadata was read. Nothing is decompressed or compressed again, and no such member is held whole.
    """
    span = delta.index.locate(f"{TARGET_DIR}/{name}")
    assert isinstance(span, MemberSpan)  # a format-2 delta (checked when opened)
    data = delta.target.members.get(name)
    ref = delta.target_manifest.file_list
    if data is not None:
        sha256, size = hashlib.sha256(data).hexdigest(), len(data)
    else:  # the file list, read and checked when the target metadata was (_metadata_order lists it only then)
        assert ref is not None
        sha256, size = ref.sha256, ref.size
    if (span.sha256, span.size) != (sha256, size):
        raise IntegrityError(
            f"{delta.path}: {TARGET_DIR}/{name}: the delta's signed digest {span.sha256[:16]}… is not the target "
            f"metadata's {sha256[:16]}…; the delta is corrupt, obtain it again"
        )
    metadata.append(MemberEntry(name, len(written), 0, span.size, sha256))
    sizes = [frame.size for frame in span.frames[1:]]
    if not layout.is_large(span.size):
        if data is None:  # a small file list, not held: read again through the delta, checked as any member read
            data = reader.read_member(delta.stream, span, caps)
        raws: list[bytes] = list(metadata_frames(name, len(data), (data,)))
    elif sizes != _chunk_sizes(span.size):
        raise IntegrityError(
            f"{delta.path}: {TARGET_DIR}/{name}: its data lies in frames of {sizes[:4]}… bytes, not in the CHUNK "
            "frames a kit lays a large metadata member out in; the delta was not made by kit, obtain it again"
        )
    else:
        raws = [tarfmt.build_header(name, span.size, 0)]
    for raw in raws:
        frame_bytes = compress_frame(raw, level)
        out.write(frame_bytes)
        written.append(FrameEntry(position, len(frame_bytes), len(raw), hashlib.sha256(frame_bytes).hexdigest()))
        position += len(frame_bytes)
    if not layout.is_large(span.size):
        return position
    label = f"{delta.path}: {TARGET_DIR}/{name}"
    copies = [
        Span(delta.stream.fileno(), f.offset, f.length, f.sha256, label, str(delta.path)) for f in span.frames[1:]
    ]
    out.flush()
    end = copy_frames(copies, out.fileno(), position, out_name=shown, threads=threads)
    out.seek(end)
    for frame in span.frames[1:]:
        written.append(FrameEntry(position, frame.length, frame.size, frame.sha256))
        position += frame.length
    return position


def _chunk_sizes(size: int) -> list[int]:
    """The decompressed sizes of a large metadata member's data frames (``writer2.metadata_frames``)."""
    padded = layout.padded(size)
    return [layout.CHUNK] * (padded // layout.CHUNK) + ([padded % layout.CHUNK] if padded % layout.CHUNK else [])

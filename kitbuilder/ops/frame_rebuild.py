"""kit patch (file mode): target group frames a content delta carries as members, rebuilt (docs/delta.md).

A delta built with ``--delta-frames content`` carries a changed group frame as the contents its members need
(``delta/patches/…``, ``delta/files/…``, ``ops.delta_content``). Each such target frame is rebuilt here: its
tar bytes from the target's signed file list (each header as the build writes it, ``framejobs.group_raw``), each
member's content from the base (cut out of the base frame the base's signed file list places it in), from a
patch (``archive.content_delta``, decoded against a base content, bounded by the target's signed size) or from
the delta, every content checked against the target's signed SHA-256; then compressed as the build compresses
(``writer2.compress_frame``: the signed level, one thread) and checked against the target's signed frame digest.
A frame this libzstd compresses otherwise is refused [4], naming the frame and what to do instead.

Rebuilt frames are written, one group at a time on a few worker threads, to an anonymous temporary file in the
output's directory (``O_TMPFILE``: a kill leaves nothing behind), and handed to the frame copier as spans over
it: the copier hashes them again as they land in the new kit, like every other frame.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from kitbuilder import faults
from kitbuilder.archive import content_delta, framejobs, layout, reader2
from kitbuilder.archive.framejobs import Record
from kitbuilder.archive.pool import usable_cores
from kitbuilder.archive.reader import Caps
from kitbuilder.archive.writer2 import compress_frame
from kitbuilder.core.manifest import FileEntry, FrameEntry, Manifest
from kitbuilder.errors import ArchiveError, IntegrityError, KitError
from kitbuilder.ops.confined import Directory, host_error
from kitbuilder.ops.delta_content import CONTENT, Carried
from kitbuilder.ops.delta_open import DeltaMetadata
from kitbuilder.ops.frame_reuse import FrameMap
from kitbuilder.ops.framecopy import Span
from kitbuilder.ops.rebuild_walk import BaseList, Place, Walk, base_key, content_key, runs

# The keys of held-back frames' base contents looked up per pass over the base's list: with their places about
# 200 bytes each, so held-back state stays under ~25 MiB however many files a release moves or copies (one that
# moves more takes one more pass for each as many).
_HELD_MAX = 1 << 17


@dataclass(frozen=True)
class _Part:
    """Where one member of a rebuilt frame comes from: ``base`` frame number (content at ``at``), or delta bytes
    (``carried``: whole content, or a patch against the base content at base frame ``base``)."""

    entry: FileEntry  # the target's signed entry
    base: int = -1
    at: int = 0
    base_size: int = 0
    base_sha256: str = ""
    carried: bytes | None = None
    patch: bool = False
    delta_name: str = ""  # the delta member that carries it (for messages)


@dataclass(frozen=True)
class _Job:
    number: int
    frame: FrameEntry
    what: str
    parts: tuple[_Part, ...]
    # The base frames the parts need, by number: their signed entries only. The worker reads and decodes them one
    # at a time (``_rebuild``): a group may draw from every frame of the base, and held at once they would cost
    # memory in the size of the base, not of the frame.
    base_frames: dict[int, FrameEntry]


class FrameRebuilder:
    """The target frames of a content delta that neither the base nor the delta holds verbatim, rebuilt once
    (on the first ``span`` call) into a temporary file; ``span`` then hands out the copier's span for each."""

    def __init__(
        self,
        delta: DeltaMetadata,
        base_path: Path,
        base_stream: BinaryIO,
        base: Manifest,
        scratch: tuple[Directory, Path],
        caps: Caps,
        target_files: Callable[[], Manifest],
    ) -> None:
        self.delta = delta
        # The target's manifest with its files, read once: file mode otherwise reads the list while copying.
        self._target_files = target_files
        self.base_path = base_path
        self.base_stream = base_stream
        self.base = base
        # The output's directory (the temporary file of rebuilt frames goes there) and the output, for messages.
        self.scratch, self.output = scratch
        self.caps = caps
        self._spans: dict[str, Span] | None = None
        self._fd = -1
        self._finalizer: Callable[[], None] | None = None

    def span(self, frame: FrameEntry) -> Span | None:
        """The span of the rebuilt target frame ``frame``, or None when the delta does not let it be rebuilt."""
        if self._spans is None:
            self._spans = self._rebuild_all()
        return self._spans.get(frame.sha256)

    # ------------------------------------------------------------------ planning

    def _rebuild_all(self) -> dict[str, Span]:
        delta = self.delta
        missing = _missing(delta, self.base)
        if not missing:
            return {}
        contents = delta.contents  # checked when the delta was opened
        target = self._target_files()  # with its files (signed, checked): where each member of a frame is
        base_list = BaseList(self.base_stream, self.base, self.caps, self.base_path)
        walk = Walk(base_list.tables())
        delta_reader = _DeltaReader(delta, self.caps)
        self._open_scratch()
        spans: dict[str, Span] = {}
        workers = usable_cores()
        level = target.build.compression.level
        base = _Base(self.base_stream.fileno(), str(self.base_path))
        position = 0
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kit-rebuild") as pool:
            pending: deque[tuple[_Job, Future[bytes]]] = deque()

            def settle() -> None:
                nonlocal position
                job, future = pending.popleft()
                try:
                    data = future.result()
                except KitError:
                    # A base list that is not the signed one is the answer, not what a frame planned from it met.
                    walk.finish()
                    raise
                self._write(data, position)
                what, where = f"rebuilt frame of {job.what}", f"{self.output} (its rebuilt frames)"
                spans[job.frame.sha256] = Span(self._fd, position, len(data), job.frame.sha256, what, where)
                position += len(data)
                faults.point("patch-file-rebuilt")

            def submit(job: _Job) -> None:
                pending.append((job, pool.submit(_rebuild, job, level, self.caps, str(self.delta.path), base)))
                while len(pending) > 2 * workers:
                    settle()

            # Frames held back (a member's base content not met at its path) as (frame, start, end) in the target's
            # list, and their base contents' keys: not their parts nor the delta contents they carry (read again
            # when planned). One more pass over the base's list (``find``) places the keys: after the walk, or once
            # _HELD_MAX wait (the walk's next read seeks to where it was).
            held: list[tuple[int, int, int]] = []
            wanted: dict[bytes, Place | None] = {}

            def look_up() -> None:
                faults.point("patch-file-rebuild-lookup")
                base_list.find(wanted)
                for number, start, end in held:
                    job = self._by_content(number, target.frames[number], target.files[start:end], wanted, contents,
                                           delta_reader)  # fmt: skip
                    if job is not None:
                        submit(job)
                held.clear()
                wanted.clear()

            try:
                # Target and base walked once, side by side, in their order: only the frame being planned and those
                # in flight are held.
                for number, start, end in runs(target.files, missing):
                    files = target.files[start:end]
                    if not _laid_out(target.frames[number], files):
                        continue
                    job = self._by_path(number, target.frames[number], files, walk, contents, delta_reader, wanted)
                    if job is not None:
                        submit(job)
                        continue
                    held.append((number, start, end))
                    if len(wanted) >= _HELD_MAX or len(held) >= _HELD_MAX:  # copies of one content: one key
                        look_up()
                walk.finish()
                if held:
                    look_up()
                while pending:
                    settle()
            finally:
                for _, future in pending:
                    future.cancel()
        return spans

    def _by_path(
        self,
        number: int,
        frame: FrameEntry,
        files: Sequence[FileEntry],
        walk: Walk,
        contents: dict[str, Carried],
        delta_reader: _DeltaReader,
        wanted: dict[bytes, Place | None],
    ) -> _Job | None:
        """Target group frame ``number`` with each member's content from the base file the walk meets at its path
        or from the delta; None when a member's is not met there (the frame is held back, the keys of its members'
        base contents added to ``wanted``)."""
        met: list[FileEntry | None] = []
        whole = True
        for entry in files:
            base = walk.seek(entry.path)  # the base's small file at this path, if the walk meets it
            met.append(base)
            carried = contents.get(entry.sha256)
            if base is not None and (base.sha256, base.size) == (entry.sha256, entry.size):
                continue
            if carried is not None and (
                carried.base_sha256 is None or (base is not None and base.sha256 == carried.base_sha256)
            ):
                continue
            whole = False  # elsewhere in the base, or nowhere: the lookup decides
        if not whole:
            for entry in files:
                carried = contents.get(entry.sha256)
                if carried is None:
                    wanted.setdefault(content_key(entry.sha256, entry.size))
                elif carried.base_sha256 is not None:
                    wanted.setdefault(base_key(carried.base_sha256))
            return None
        parts: list[_Part] = []
        for entry, base in zip(files, met, strict=True):
            if base is not None and (base.sha256, base.size) == (entry.sha256, entry.size):
                parts.append(_Part(entry, base=base.frame or 0, at=base.at))
                continue
            carried = contents[entry.sha256]
            data = delta_reader.content(carried.entry)
            if carried.base_sha256 is None:
                parts.append(_Part(entry, carried=data))
            else:
                assert base is not None  # met at its path (checked above)
                parts.append(_Part(entry, base.frame or 0, base.at, base.size, base.sha256, carried=data, patch=True))
        return _job(number, frame, files, parts, self.base.frames)

    def _by_content(
        self,
        number: int,
        frame: FrameEntry,
        files: Sequence[FileEntry],
        found: dict[bytes, Place | None],
        contents: dict[str, Carried],
        delta_reader: _DeltaReader,
    ) -> _Job | None:
        """Held-back target frame ``number`` with each member's content from the delta or the base file the lookup
        found holding it (``found``); None when neither holds a member's (the caller's error names the frame)."""
        parts: list[_Part] = []
        for entry in files:
            carried = contents.get(entry.sha256)
            if carried is None:
                place = found.get(content_key(entry.sha256, entry.size))
                if place is None:
                    return None
                parts.append(_Part(entry, base=place[0], at=place[1]))
                continue
            data = delta_reader.content(carried.entry)
            if carried.base_sha256 is None:
                parts.append(_Part(entry, carried=data))
                continue
            place = found.get(base_key(carried.base_sha256))
            if place is None:
                raise IntegrityError(
                    f"{self.delta.path}: {carried.entry.path}: a content delta against a base content "
                    f"(sha256 {carried.base_sha256[:16]}…) that the base {self.base_path} does not hold as a small "
                    "file; the delta was not made for this base: obtain the matching one"
                )
            frame_of, at, size = place
            parts.append(_Part(entry, frame_of, at, size, carried.base_sha256, carried=data, patch=True))
        return _job(number, frame, files, parts, self.base.frames)

    # ------------------------------------------------------------------ the scratch file

    def _open_scratch(self) -> None:
        """An anonymous file in the output's directory (nothing is left there if the patch is killed)."""
        try:
            try:
                self._fd = os.open(".", os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600, dir_fd=self.scratch.fd)
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                    raise
                # A filesystem without O_TMPFILE: a named file, unlinked at once.
                self._fd, name = tempfile.mkstemp(dir=f"/proc/self/fd/{self.scratch.fd}", prefix=".kit-rebuild-")
                os.unlink(name)
        except OSError as exc:
            raise host_error(exc, str(self.output), "write") from exc
        self._finalizer = weakref.finalize(self, _close, self._fd)

    def _write(self, data: bytes, position: int) -> None:
        try:
            view = memoryview(data)
            while view:
                written = os.pwrite(self._fd, view, position)
                view = view[written:]
                position += written
        except OSError as exc:
            raise host_error(exc, str(self.output), "write") from exc


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def _missing(delta: DeltaMetadata, base: Manifest) -> list[int]:
    """The target frames neither the base nor the delta holds, the first of each content: to be rebuilt. Only a
    content delta says so (one whose group lost a file may need no content member at all); for any other, a
    missing frame is the caller's error (none is returned)."""
    if delta.manifest.delta is None or delta.manifest.delta.frames != CONTENT:
        return []
    have = {f.sha256 for f in base.frames} | set(delta.carried)
    missing: dict[str, int] = {}
    for number, frame in enumerate(delta.target_manifest.frames):
        if frame.sha256 not in have:
            missing.setdefault(frame.sha256, number)
    return list(missing.values())


def _laid_out(frame: FrameEntry, files: Sequence[FileEntry]) -> bool:
    """Whether the members of ``frame`` are laid out as the writer lays out a group (only such a frame can be
    made again)."""
    position = 0
    for entry in files:
        if entry.at != position:
            return False
        position += layout.member_bytes(entry.size)
    return position == frame.size


def _job(
    number: int, frame: FrameEntry, files: Sequence[FileEntry], parts: list[_Part], frames: Sequence[FrameEntry]
) -> _Job:
    what = files[0].path + (f" and {len(files) - 1} more" if len(files) > 1 else "")
    used = sorted({part.base for part in parts if part.base >= 0})
    return _Job(number, frame, what, tuple(parts), {n: frames[n] for n in used})


class _DeltaReader:
    """Members of the delta's own group frames, read through its verified descriptor, each frame checked against
    the delta's signed digest and decoded once (its members are asked for in turn), each member's header and
    content against the delta's signed file list."""

    def __init__(self, delta: DeltaMetadata, caps: Caps) -> None:
        self.delta = delta
        self.caps = caps
        self.map = FrameMap(delta.manifest, what=str(delta.path))
        self._held: tuple[int, bytes] | None = None

    def content(self, entry: FileEntry) -> bytes:
        span = self.map.span_of(entry)
        if len(span.frames) != 1:
            raise IntegrityError(
                f"{self.delta.path}: {entry.path}: a content member in frames of its own; kit writes none"
            )
        if self._held is None or self._held[0] != span.frame:
            decoded = reader2.read_frame(
                self.delta.stream, span.frames[0], span.frame, max_window=self.caps.max_window, against="signed"
            )
            self._held = (span.frame, decoded)
        decoded = self._held[1]
        reader2.check_in_frame(decoded, span, against="signed")
        start = span.at + layout.BLOCK
        return decoded[start : start + entry.size]


@dataclass(frozen=True)
class _Base:
    """The base kit's descriptor (read with ``pread``: workers share it) and its name, for messages."""

    fd: int
    name: str

    def decoded(self, frame: FrameEntry, number: int, caps: Caps) -> bytes:
        """Base frame ``number``, read, checked against the base's signed frame digest, then decoded under the
        frame rules (bounded by its signed size): a damaged base is named here, not as a rebuilt frame that
        differs."""
        try:
            data = os.pread(self.fd, frame.length, frame.offset)
        except OSError as exc:
            raise host_error(exc, self.name, "read") from exc
        try:
            return reader2.decode_frame(data, frame, number, max_window=caps.max_window, against="signed")
        except (ArchiveError, KitError) as exc:
            raise IntegrityError(f"{self.name}: base {exc.message}; the base is damaged: obtain it again") from exc


def _rebuild(job: _Job, level: int, caps: Caps, delta_name: str, base: _Base) -> bytes:
    """Worker: the target frame of ``job``, compressed, checked against its signed digest.

    The base frames the members come from are read and decoded one at a time, each dropped once the members it
    holds are cut out of it (and the patches against it decoded): what is held is one base frame and the target
    frame's own contents (its signed size), however many base frames the group draws from."""
    where = f"{delta_name}: target frame {job.number} ({job.what})"
    contents: list[bytes | None] = [p.carried if p.carried is not None and not p.patch else None for p in job.parts]
    by_frame: dict[int, list[int]] = {}
    for place, part in enumerate(job.parts):
        if contents[place] is None:
            by_frame.setdefault(part.base, []).append(place)
    for number in sorted(by_frame):
        held = base.decoded(job.base_frames[number], number, caps)
        for place in by_frame[number]:
            contents[place] = _content(job.parts[place], held, where)
        del held
    members: list[tuple[Record, bytes]] = []
    for part, content in zip(job.parts, contents, strict=True):
        assert content is not None  # every part is carried whole or cut out of (or patched against) a base frame
        entry = part.entry
        members.append((Record(entry.path, job.number, entry.at, entry.size, entry.sha256), content))
    raw = framejobs.group_raw(members)
    packed = compress_frame(raw, level)
    got = hashlib.sha256(packed).hexdigest()
    if len(raw) != job.frame.size or got != job.frame.sha256:
        raise IntegrityError(
            f"{delta_name}: target frame {job.number} ({job.what}): rebuilt from the base and the delta's content, "
            f"it compresses to other bytes than the target signs (sha256 {got[:16]}…, signed "
            f"{job.frame.sha256[:16]}…): this zstd library ({_zstd_version()}) compresses differently from the "
            "build's; apply the full kit, or a delta built with `kit build --delta-frames verbatim`"
        )
    return packed


def _content(part: _Part, held: bytes, where: str) -> bytes:
    """The target content of ``part`` from the decoded base frame ``held``: cut out of it, or its patch decoded
    against the base content cut out of it; either checked against the signed SHA-256."""
    entry = part.entry
    start = part.at + layout.BLOCK
    if part.patch:
        base = held[start : start + part.base_size]
        if hashlib.sha256(base).hexdigest() != part.base_sha256:
            raise IntegrityError(f"{where}: the base's content of {entry.path}'s patch is not the signed one")
        assert part.carried is not None
        return content_delta.decode(
            part.carried, base, size=entry.size, sha256=entry.sha256, what=f"{where}: patch of {entry.path}"
        )
    content = held[start : start + entry.size]
    if len(content) != entry.size or hashlib.sha256(content).hexdigest() != entry.sha256:
        raise IntegrityError(
            f"{where}: the base does not hold {entry.path}'s signed content where its file list says; "
            "the base is damaged: obtain it again"
        )
    return content


def _zstd_version() -> str:
    return "libzstd " + ".".join(str(part) for part in zstandard.ZSTD_VERSION)

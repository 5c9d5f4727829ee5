"""kit patch (file mode): target group frames a content delta carries as members, rebuilt (docs/delta.md).

A delta built with ``--delta-frames content`` carries a changed group frame as the contents its members need
(``delta/patches/…``, ``delta/files/…``, ``ops.delta_content``). Each such target frame is rebuilt here: its
tar bytes from the target's signed file list (each header as the build writes it, ``framejobs.group_raw``), each
member's content from the base (cut out of the base frame the base's signed file list places it in), from a
patch (``archive.content_delta``, decoded against a base content, bounded by the target's signed size) or from
the delta, every content checked against the target's signed SHA-256; then compressed as the build compresses
(``writer2.compress_frame``: the signed level, one thread) and checked against the target's signed frame digest.
A frame this libzstd compresses otherwise is refused [4], naming the frame and what to do instead.

Rebuilt frames are made one group at a time on a few worker threads and written straight into the new kit, at
the offsets the target's signed frame table gives them, while the frame copier fills in the frames the base and
the delta hold (``patch_file``): neither waits for the other, and a rebuilt frame is written once.

Each is made first without the checks on the way (the base frame's digest, each content's): its compressed
bytes must have the target's signed digest, which only the right contents compressed by the build's libzstd
give. Only a frame that comes out otherwise (or whose base frame does not even decode) is made again with every
check, to say why: a damaged base, a content that is not the signed one, or, when all of those hold, a libzstd
that compresses differently. That saves a SHA-256 pass over every base frame and every content drawn from it.
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from kitbuilder import faults
from kitbuilder.archive import content_delta, framejobs, layout, reader2, zstdframes
from kitbuilder.archive.framejobs import Record
from kitbuilder.archive.pool import usable_cores
from kitbuilder.archive.reader import Caps
from kitbuilder.archive.writer2 import compress_frame
from kitbuilder.core.manifest import FileEntry, FrameEntry, Manifest
from kitbuilder.errors import ArchiveError, IntegrityError, KitError
from kitbuilder.ops.confined import host_error
from kitbuilder.ops.delta_content import CONTENT, Carried
from kitbuilder.ops.delta_open import DeltaMetadata
from kitbuilder.ops.frame_reuse import FrameMap
from kitbuilder.ops.framecopy import start_writeback
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
    """The target frames of a content delta that neither the base nor the delta holds verbatim, rebuilt into the
    new kit (``rebuild``)."""

    def __init__(
        self,
        delta: DeltaMetadata,
        base_path: Path,
        base_stream: BinaryIO,
        base: Manifest,
        output: Path,
        caps: Caps,
        target_files: Callable[[], Manifest],
    ) -> None:
        self.delta = delta
        # The target's manifest with its files, read once: file mode otherwise reads the list while copying.
        self._target_files = target_files
        self.base_path = base_path
        self.base_stream = base_stream
        self.base = base
        self.output = output  # for messages
        self.caps = caps

    @property
    def can_rebuild(self) -> bool:
        """Whether the delta lets target frames be rebuilt at all (a content delta)."""
        return _is_content(self.delta)

    def rebuild(self, out: int, places: Mapping[str, Sequence[tuple[int, FrameEntry]]]) -> set[str]:
        """Rebuild the target frames of the digests in ``places`` and write each into the descriptor ``out`` at
        every target frame (number, signed entry) listed for its digest, which it must fill exactly; return the
        digests written (one the delta does not let be rebuilt is not: the caller's error names it). ``places``: the
        frames neither kit holds, of a content delta only (``can_rebuild``), each digest's first place first."""
        delta = self.delta
        missing = [at[0][0] for at in places.values()]  # the first frame of each digest: the one planned
        written: set[str] = set()
        if not missing:
            return written
        contents = delta.contents  # checked when the delta was opened
        target = self._target_files()  # with its files (signed, checked): where each member of a frame is
        base_list = BaseList(self.base_stream, self.base, self.caps, self.base_path)
        walk = Walk(base_list.tables())
        delta_reader = _DeltaReader(delta, self.caps)
        workers = usable_cores()
        level = target.build.compression.level
        base = _Base(self.base_stream.fileno(), str(self.base_path))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kit-rebuild") as pool:
            pending: deque[tuple[_Job, Future[bytes]]] = deque()

            def settle() -> None:
                job, future = pending.popleft()
                try:
                    data = future.result()
                except KitError:
                    # A base list that is not the signed one is the answer, not what a frame planned from it met.
                    walk.finish()
                    raise
                for number, frame in places.get(job.frame.sha256, ()):
                    self._write(out, data, number, frame, job.frame.size)
                written.add(job.frame.sha256)
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
        return written

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

    def _write(self, out: int, data: bytes, number: int, frame: FrameEntry, size: int) -> None:
        """One rebuilt frame (``data``: bytes with ``frame``'s signed digest, decoding to ``size`` bytes) at target
        frame ``number``'s place in the new kit; then handed to writeback, as the copier does its runs.

        The frames around it are written where the target's signed table puts them, so bytes of another length
        than the table signs for this place would leave a hole or run into the next frame, and another decoded
        size would make the new kit's index lie: refused, as the copier refuses a frame of another length."""
        if (len(data), size) != (frame.length, frame.size):
            raise IntegrityError(
                f"{self.delta.path}: the target's signed frame {number} is {frame.length} bytes decoding to "
                f"{frame.size}, but the bytes of its signed digest are {len(data)} decoding to {size}; the delta is "
                "corrupt, obtain it again"
            )
        offset = frame.offset
        try:
            view = memoryview(data)
            position = offset
            while view:
                written = os.pwrite(out, view, position)
                view = view[written:]
                position += written
        except OSError as exc:
            raise host_error(exc, str(self.output), "write") from exc
        start_writeback(out, offset, len(data))


def _is_content(delta: DeltaMetadata) -> bool:
    return delta.manifest.delta is not None and delta.manifest.delta.frames == CONTENT


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

    def decoded(self, frame: FrameEntry, number: int, caps: Caps, *, checked: bool) -> bytes:
        """Base frame ``number``, read and decoded under the frame rules (bounded by its signed size); ``checked``:
        against the base's signed frame digest first, so a damaged base is named here, not as a rebuilt frame that
        differs."""
        try:
            data = os.pread(self.fd, frame.length, frame.offset)
        except OSError as exc:
            raise host_error(exc, self.name, "read") from exc
        what = f"frame {number} at offset {frame.offset}"
        try:
            if not checked:
                return zstdframes.decode_whole(data, size=frame.size, max_window=caps.max_window, what=what)
            return reader2.decode_frame(data, frame, number, max_window=caps.max_window, against="signed")
        except (ArchiveError, KitError) as exc:
            raise IntegrityError(f"{self.name}: base {exc.message}; the base is damaged: obtain it again") from exc


def _rebuild(job: _Job, level: int, caps: Caps, delta_name: str, base: _Base) -> bytes:
    """Worker: the target frame of ``job``, compressed, checked against its signed digest.

    Made first without the checks on the way (``_made``): the signed frame digest covers every byte that went
    into it. A frame that does not come out as signed is made again with every check, to name the cause."""
    try:
        raw, packed = _made(job, level, caps, delta_name, base, checked=False)
        if len(raw) == job.frame.size and hashlib.sha256(packed).hexdigest() == job.frame.sha256:
            return packed
    except KitError:
        pass  # the checked pass below says which input is wrong
    raw, packed = _made(job, level, caps, delta_name, base, checked=True)
    got = hashlib.sha256(packed).hexdigest()
    if len(raw) != job.frame.size or got != job.frame.sha256:
        raise IntegrityError(
            f"{delta_name}: target frame {job.number} ({job.what}): rebuilt from the base and the delta's content, "
            f"it compresses to other bytes than the target signs (sha256 {got[:16]}…, signed "
            f"{job.frame.sha256[:16]}…): this zstd library ({_zstd_version()}) compresses differently from the "
            "build's; apply the full kit, or a delta built with `kit build --delta-frames verbatim`"
        )
    return packed


def _made(job: _Job, level: int, caps: Caps, delta_name: str, base: _Base, *, checked: bool) -> tuple[bytes, bytes]:
    """The target frame of ``job``: its tar bytes and those compressed. ``checked``: each base frame against its
    signed digest and each content against its signed SHA-256 on the way (IntegrityError naming the first that
    is not).

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
        held = base.decoded(job.base_frames[number], number, caps, checked=checked)
        for place in by_frame[number]:
            contents[place] = _content(job.parts[place], held, where, checked=checked)
        del held
    members: list[tuple[Record, bytes]] = []
    for part, content in zip(job.parts, contents, strict=True):
        assert content is not None  # every part is carried whole or cut out of (or patched against) a base frame
        entry = part.entry
        members.append((Record(entry.path, job.number, entry.at, entry.size, entry.sha256), content))
    raw = framejobs.group_raw(members)
    return raw, compress_frame(raw, level)


def _content(part: _Part, held: bytes, where: str, *, checked: bool) -> bytes:
    """The target content of ``part`` from the decoded base frame ``held``: cut out of it, or its patch decoded
    against the base content cut out of it (a decoded patch is always checked against its signed SHA-256: the
    patch format says so); ``checked``: what is cut out too."""
    entry = part.entry
    start = part.at + layout.BLOCK
    if part.patch:
        base = held[start : start + part.base_size]
        if checked and hashlib.sha256(base).hexdigest() != part.base_sha256:
            raise IntegrityError(f"{where}: the base's content of {entry.path}'s patch is not the signed one")
        assert part.carried is not None
        return content_delta.decode(
            part.carried, base, size=entry.size, sha256=entry.sha256, what=f"{where}: patch of {entry.path}"
        )
    content = held[start : start + entry.size]
    if checked and (len(content) != entry.size or hashlib.sha256(content).hexdigest() != entry.sha256):
        raise IntegrityError(
            f"{where}: the base does not hold {entry.path}'s signed content where its file list says; "
            "the base is damaged: obtain it again"
        )
    return content


def _zstd_version() -> str:
    return "libzstd " + ".".join(str(part) for part in zstandard.ZSTD_VERSION)

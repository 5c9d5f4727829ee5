"""What a format-2 kit's signed manifest says about its frames, and a base kit a build may take frames from.

Format 2 (docs/format.md §0) makes the zstd frame the unit: a *group* frame holds
whole small members, a large member is a 512-byte *header* frame then CHUNK-sized
*chunk* frames. ``FrameMap`` reads that structure off a signed manifest (``frames``
and each file's ``frame``/``at``), so delta, patch and diff never need the
unsigned index for it. ``BaseFrames`` is the verified base of ``kit build
--delta-from``: the format-2 writer asks it for a group by its member list and for
a chunk by (content, chunk number) and copies what it returns verbatim, after
checking the bytes against the base's signed frame digest and decoding them to
exactly the bytes it would have compressed.
"""

from __future__ import annotations

import hashlib
import os
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from kitbuilder.archive import layout, reader2
from kitbuilder.archive.framejobs import Verbatim
from kitbuilder.archive.index import MemberSpan
from kitbuilder.archive.reader import Caps
from kitbuilder.core import filelist
from kitbuilder.core.filelist import FILE_LIST
from kitbuilder.core.manifest import MANIFEST_JSON, SHA256SUMS, FileEntry, FrameEntry, Manifest
from kitbuilder.core.manifest_parts import BuildInfo
from kitbuilder.errors import ArchiveError, FormatError, HostIOError, IntegrityError, KitError, UsageError
from kitbuilder.ops.kitfile import open_kit, read_metadata
from kitbuilder.ops.verify import check_signed_metadata
from kitbuilder.trust.signatures import TrustPolicy

FrameKind = Literal["group", "header", "chunk"]


def full_kit_needed(path: object, what: str) -> UsageError:
    """The one refusal of a format-1 kit where frames are reused (delta, patch): exit 2, one line."""
    return UsageError(
        f"{path}: {what} is a format-1 kit (kitbuilder/v1); deltas and patches need format-2 kits on both sides: "
        "ship and install a full kit of this release instead"
    )


def check_full_kit(manifest: Manifest, path: object, what: str) -> None:
    """UsageError unless ``manifest`` is a full format-2 kit's: the only kind a delta or a patch may start from.

    A delta kit carries frames, not the kit: a delta built from it would apply to that delta file, which no site
    holds (the mistake would show only at the site, after shipping), and a patch of it is that mistake's other half.
    """
    if manifest.format_version != 2:
        raise full_kit_needed(path, what)
    if manifest.delta is not None:
        raise UsageError(
            f"{path}: {what} is a delta kit (of {manifest.kit.name} sequence {manifest.kit.sequence}), not a kit: "
            "name the full kit of that release (`kit patch` makes it from its own base and this delta)"
        )


@dataclass(frozen=True)
class FrameRole:
    """What one payload frame holds: whole members (a group), a large member's header, or one of its chunks.

    A group names its members by their numbers in the manifest's files (``numbers``, in frame order) and makes
    their entries on access (``files``): a map of a million files holds no entry object per file."""

    kind: FrameKind
    held: Sequence[FileEntry]  # group: the manifest's files; header/chunk: the large member alone
    chunk: int = 0  # chunk number within the large member
    numbers: Sequence[int] = (0,)  # group: its members' numbers in ``held``, in order of ``at``

    @property
    def files(self) -> tuple[FileEntry, ...]:
        """group: its members in order; header/chunk: the large member."""
        return tuple(self.held[n] for n in self.numbers)


class FrameMap:
    """The payload frames of a format-2 manifest and what each holds, derived from signed fields only.

    The manifest was verified (signature) but its frame/member layout is checked here again, as a reader
    would: members in frame order, each group frame holding whole small members, each large member a
    header frame then exactly its padded data in chunk frames. IntegrityError names the first fault.
    """

    def __init__(self, manifest: Manifest, *, what: str) -> None:
        if manifest.format_version != 2:
            raise full_kit_needed(what, "it")
        self.manifest = manifest
        self.frames = manifest.frames
        self.roles: list[FrameRole | None] = [None] * len(self.frames)
        self.spans: dict[str, MemberSpan] = {}  # the large members (``span_of`` for any member)
        starts = [0]
        for frame in self.frames:
            starts.append(starts[-1] + frame.size)
        self._starts = starts
        groups: dict[int, tuple[array[int], array[int]]] = {}  # frame: its small members' numbers and places
        for position, entry in enumerate(manifest.files):
            number = entry.frame
            if number is None or not 0 <= number < len(self.frames):
                raise IntegrityError(f"{what}: {entry.path} names frame {number}, not one of its payload frames")
            first = self.frames[number]
            if entry.at + layout.member_bytes(entry.size) <= first.size:
                # A small member: its span is made when asked for (``span_of``), not kept.
                numbers, places = groups.setdefault(number, (array("q"), array("q")))
                numbers.append(position)
                places.append(entry.at)
                continue
            if entry.at == 0 and first.size == layout.BLOCK:
                # Its header alone, then frames holding exactly its padded data (as the index reader requires).
                self._claim(number, FrameRole("header", (entry,)), what)
                left, last = layout.padded(entry.size), number + 1
                while left > 0:
                    if last >= len(self.frames) or self.frames[last].size > left:
                        raise IntegrityError(f"{what}: {entry.path}: its data frames do not hold exactly its data")
                    self._claim(last, FrameRole("chunk", (entry,), last - number - 1), what)
                    left -= self.frames[last].size
                    last += 1
                held = self.frames[number:last]
            else:
                raise IntegrityError(f"{what}: {entry.path} overruns frame {number}, which is not its header alone")
            self.spans[entry.path] = MemberSpan(
                entry.path, entry.size, entry.sha256, number, entry.at, tuple(held), starts[number] + entry.at
            )
        for number, (numbers, places) in groups.items():
            if any(a > b for a, b in zip(places, places[1:], strict=False)):
                order = sorted(range(len(numbers)), key=places.__getitem__)
                numbers = array("q", (numbers[n] for n in order))
            self._claim(number, FrameRole("group", manifest.files, numbers=numbers), what)
        for number, role in enumerate(self.roles):
            if role is None:
                raise IntegrityError(f"{what}: payload frame {number} holds no member")

    def _claim(self, number: int, role: FrameRole, what: str) -> None:
        if self.roles[number] is not None:
            raise IntegrityError(f"{what}: payload frame {number} is claimed by two members' bytes")
        self.roles[number] = role

    def by_sha256(self) -> dict[str, tuple[int, FrameEntry]]:
        """Each distinct frame digest, with the first frame that has it."""
        found: dict[str, tuple[int, FrameEntry]] = {}
        for number, frame in enumerate(self.frames):
            found.setdefault(frame.sha256, (number, frame))
        return found

    def span_of(self, entry: FileEntry) -> MemberSpan:
        """The frames holding a member of the manifest (``spans`` holds the large ones; a small one's is made)."""
        span = self.spans.get(entry.path)
        if span is not None:
            return span
        number = entry.frame or 0
        start = self._starts[number] + entry.at
        return MemberSpan(entry.path, entry.size, entry.sha256, number, entry.at, (self.frames[number],), start)

    def chunk_frames(self, entry: FileEntry) -> tuple[FrameEntry, ...]:
        """The chunk frames of a large member, in order."""
        return self.spans[entry.path].frames[1:]


def group_key(files: Iterable[FileEntry]) -> tuple[tuple[str, int, str], ...]:
    return tuple((f.path, f.size, f.sha256) for f in files)


def _list_digest(members: tuple[tuple[str, int, str], ...]) -> bytes:
    digest = hashlib.sha256()
    for path, size, sha256 in members:
        digest.update(f"{path}\0{size}\0{sha256}\n".encode())
    return digest.digest()


def _group_bytes(files: Iterable[FileEntry]) -> int:
    """The decompressed size of a group frame holding exactly ``files`` back to back from byte 0 (as the writer
    cuts it), or -1 when they do not lie so."""
    position = 0
    for entry in files:
        if entry.at != position:
            return -1
        position += layout.member_bytes(entry.size)
    return position


def _chunk_bytes(size: int, chunk: int) -> int:
    """The decompressed size of chunk frame ``chunk`` of a large member of ``size`` bytes, as the writer cuts it."""
    return min(layout.CHUNK, layout.padded(size) - chunk * layout.CHUNK)


class BaseFrames:
    """A verified format-2 base kit whose frames ``kit build --delta-from`` may copy (the writer's reuse hook).

    Only the base's signed metadata is verified here (signatures with the build keys, threshold 1); each
    frame handed out is read from the one open descriptor and checked by the writer against its signed
    digest (``Verbatim.sha256``) and decoded before it is written, so a damaged or lying base frame fails the
    build [4].
    """

    def __init__(self, path: Path, policy: TrustPolicy, caps: Caps | None = None) -> None:
        self.path = path
        self.caps = caps or Caps()
        self._stream = open_kit(path)
        try:
            # Not kept: its members (SHA256SUMS, ~95 bytes a file) would lie beside the new kit's while it is built.
            metadata = read_metadata(self._stream, self.caps)
            check_full_kit(metadata.manifest, f"--delta-from {path}", "the base")
            _, _, manifest = check_signed_metadata(metadata, policy)
            frame_map = FrameMap(manifest, what=f"--delta-from {path}")
        except BaseException:
            self._stream.close()
            raise
        self.manifest_sha256 = hashlib.sha256(metadata.members[MANIFEST_JSON]).hexdigest()
        del metadata
        # Its files are not kept (nor a FrameMap, which holds them): a million files are ~150 MiB that would lie
        # beside the new kit's while it is built, where only the frames are looked up (by the tables below). A
        # delta's plan reads them again afterwards (``files``).
        self.manifest = manifest.with_files(())
        self._frames = manifest.frames
        self._starts = array("q", [0])
        for frame in self._frames:
            self._starts.append(self._starts[-1] + frame.size)
        # Keyed by the digest of the member list (``group_key``), not the list: one key per frame, not per file.
        self._groups: dict[bytes, int] = {}
        # A chunk frame by (content, size, chunk number): its frame number and its large member's path.
        self._chunks: dict[tuple[str, int, int], tuple[int, str]] = {}
        cut: dict[str, bool] = {}
        for number, role in enumerate(frame_map.roles):
            assert role is not None
            # Only frames laid out exactly as this build's writer cuts them are offered: the writer records its
            # own decompressed size for a reused frame, so a frame of any other size could never be equal.
            if role.kind == "group":
                members = role.files  # made on access: once per frame, not once per use
                if _group_bytes(members) == self.frames[number].size:
                    self._groups.setdefault(_list_digest(group_key(members)), number)
            elif role.kind == "chunk":
                entry = role.files[0]
                if entry.path not in cut:
                    cut[entry.path] = self._cut_as_written(frame_map, entry)
                if not cut[entry.path]:
                    continue
                self._chunks.setdefault((entry.sha256, entry.size, role.chunk), (number, entry.path))
        del frame_map, manifest
        self._lock = threading.Lock()  # the writer asks from its worker threads
        self.reused_frames = 0
        self.reused_bytes = 0
        self._decoded: tuple[int, bytes] | None = None  # the last group frame ``content`` decoded

    @staticmethod
    def _cut_as_written(frame_map: FrameMap, entry: FileEntry) -> bool:
        """Every chunk frame of large member ``entry`` has the size the writer cuts (CHUNK, the last one shorter).

        This also bounds what the writer's decoding of each offered chunk may allocate by CHUNK, whatever sizes a
        base's signed manifest declares.
        """
        return all(
            frame.size == _chunk_bytes(entry.size, chunk) for chunk, frame in enumerate(frame_map.chunk_frames(entry))
        )

    @property
    def fd(self) -> int:
        return self._stream.fileno()

    def close(self) -> None:
        self._stream.close()

    def files(self) -> Sequence[FileEntry]:
        """The base's signed files, read again from its file list through the descriptor verified at open.

        The manifest read must be the verified one (its SHA-256), else the base changed under the build [4]; the
        list must then have the digest and size that manifest states [4] and the one byte form (``filelist.parse``).
        SHA256SUMS, checked against these very bytes at open, is not read again. A million files cost ~150 MiB, so
        a delta build holds them only while it plans.
        """
        what = f"--delta-from {self.path}"
        metadata = read_metadata(self._stream, self.caps, defer_files=True, unread=frozenset({SHA256SUMS}))
        if hashlib.sha256(metadata.members[MANIFEST_JSON]).hexdigest() != self.manifest_sha256:
            raise IntegrityError(
                f"{what}: its {MANIFEST_JSON} changed while the delta was built; build again from a base nothing "
                "writes to"
            )
        ref, read_list = metadata.manifest.file_list, metadata.read_file_list
        if ref is None or read_list is None:  # a format-2 manifest, verified at open, has its list
            raise IntegrityError(f"{what}: its {MANIFEST_JSON} names no file list")
        digest = hashlib.sha256()
        read = 0

        def pieces() -> Iterator[bytes]:
            nonlocal read
            for piece in read_list():
                read += len(piece)
                if read > ref.size:
                    break
                digest.update(piece)
                yield piece

        sizes = [frame.size for frame in self._frames]
        try:
            files = filelist.parse(pieces(), count=ref.count, frame_sizes=sizes, what=f"{what}: {FILE_LIST}")
        except FormatError as exc:
            raise IntegrityError(f"{exc.message} (it changed while the delta was built)") from exc
        if read != ref.size or digest.hexdigest() != ref.sha256:
            raise IntegrityError(
                f"{what}: its {FILE_LIST} changed while the delta was built ({read} bytes, not the {ref.size} of "
                f"sha256 {ref.sha256[:16]}… its manifest signs); build again from a base nothing writes to"
            )
        return files

    def check_compatible(self, build_info: BuildInfo) -> None:
        """UsageError unless this build compresses frames as the base did (else no frame could be equal)."""
        base = self.manifest.build.compression.level
        level = build_info.compression.level
        if base != level:
            raise UsageError(
                f"--delta-from {self.path}: base was compressed at level {base}, this build uses level {level}; "
                f"build with --level {base} so its frames can be reused"
            )

    # The format-2 writer's reuse hook (archive.framejobs.FrameReuse), called from its worker threads.
    #
    # The base's manifest is signed, but a signature says who made it, not that its frames hold what it lists:
    # a signer's broken pipeline (or a hostile signer) can list a frame under members it does not contain. So the
    # writer uses a frame offered here only after checking it against the signed digest and decoding it to exactly
    # the bytes this build would compress (archive.framejobs.reused, once per frame, on the worker); a frame that
    # decodes to anything else is refused with the words ``_lies`` gives.

    def group(self, members: tuple[tuple[str, int, str], ...]) -> Verbatim | None:
        number = self._groups.get(_list_digest(members))
        if number is None:
            return None
        # Found by the SHA-256 of its signed member list (the files are not kept to compare the list itself); the
        # writer decodes the frame and compares it with the bytes it would compress in any case.
        return self._offer(number, f"it does not hold {members[0][0]} and the rest of its group as signed")

    def chunk(self, sha256: str, size: int, number: int) -> Verbatim | None:
        found = self._chunks.get((sha256, size, number))
        if found is None:
            return None
        frame, path = found
        return self._offer(frame, f"its chunk {number} does not decode to the signed content of {path}")

    def content(self, entry: FileEntry) -> bytes:
        """The content of the base's small member ``entry`` (one of its signed files), cut out of its group frame.

        The frame must have its signed digest and the member its signed header and content digest, else the
        base's signers built it wrongly [4] (``_lies``). The last frame decoded is kept: a delta asks for the
        members of one group in turn. Called from one thread (the delta writer's).
        """
        number = entry.frame or 0
        if layout.is_large(entry.size) or not 0 <= number < len(self._frames):
            raise ValueError(f"{entry.path}: a large member has no one-frame content")
        frame = self._frames[number]
        span = MemberSpan(
            entry.path, entry.size, entry.sha256, number, entry.at, (frame,), self._starts[number] + entry.at
        )
        if self._decoded is None or self._decoded[0] != number:
            try:
                decoded = reader2.decode_frame(
                    self._pread(number), span.frames[0], number, max_window=self.caps.max_window, against="signed"
                )
            except (ArchiveError, IntegrityError) as exc:
                raise self._lies(number, exc.message) from exc
            self._decoded = (number, decoded)
        decoded = self._decoded[1]
        try:
            reader2.check_in_frame(decoded, span, against="signed")
        except (ArchiveError, IntegrityError) as exc:
            raise self._lies(number, exc.message) from exc
        start = span.at + layout.BLOCK
        return decoded[start : start + entry.size]

    def _pread(self, number: int) -> bytes:
        frame = self.frames[number]
        try:
            return os.pread(self.fd, frame.length, frame.offset)
        except OSError as exc:
            raise HostIOError.from_os_error(exc, path=self.path, action="read") from exc

    def _offer(self, number: int, lie: str) -> Verbatim:
        # A short read is a base that changed after its metadata was verified: the digest check refuses it.
        data = self._pread(number)
        with self._lock:
            self.reused_frames += 1
            self.reused_bytes += len(data)
        return Verbatim(data, self.frames[number].sha256, self._lies(number, lie).message)

    def _lies(self, number: int, what: str) -> KitError:
        return IntegrityError(
            f"--delta-from {self.path}: payload frame {number} does not hold what the base's signed manifest lists "
            f"({what}); its signers built it wrongly: build without --delta-from, or obtain a genuine base"
        )

    @property
    def frames(self) -> tuple[FrameEntry, ...]:
        return self._frames

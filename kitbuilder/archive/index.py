"""The archive index: where each frame and member lies, kept in a skippable frame at the end.

The index lets ``inspect`` and ``patch`` seek to a member without decompressing
anything else. It is only a map: its payload part is repeated in the signed
manifest, and the verifier checks both against the stream it decompresses.

Two formats (docs/format.md §0.4, §1.3):

- format 1 (``kitbuilder-index/v1``, read only): one entry per member with the
  file offset and length of its two frames (header, data) and the data frame's digest.
- format 2 (``kitbuilder-index/v2``): a ``frames`` table listing every zstd frame
  (file offset, compressed length, decompressed size, digest of the compressed
  bytes) and one entry per *metadata* member naming the frame that holds its header
  (``frame``) and where in that frame's decompressed bytes the header starts
  (``at``). Payload files are not listed: the signed file list
  (``manifest.files.jsonl``) places them. ``KitIndex.from_bytes`` checks that the
  frames tile the file and that the metadata members tile the frames before the
  end-of-archive frame, one frame each; ``with_payload`` adds the payload members
  from the (checked) file list and checks that all members tile the tar stream
  under the frame rules, so every reader after it works on a consistent map
  (``MemberSpan``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Any, overload

from kitbuilder.archive import layout, metadata_members
from kitbuilder.core import jsonio, schemas
from kitbuilder.core.filelist import FileTable
from kitbuilder.core.manifest import FileEntry, FrameEntry, is_metadata
from kitbuilder.errors import ArchiveError

INDEX_FORMAT = "kitbuilder-index/v1"
INDEX_FORMAT_V2 = "kitbuilder-index/v2"
# The smallest a format-1 member can be in the archive: two zstd frames (header and data) of at least 9 bytes each
# (magic, frame header, one block header). An index cannot list more members than the bytes before it hold.
MIN_MEMBER_BYTES = 18
# The smallest zstd frame: magic, a 2-byte frame header, one block header. A format-2 index cannot list more frames
# than the bytes before it hold.
MIN_FRAME_BYTES = 9
# Per member the v1 index holds one object with six fields (13 values and keys); the rest is a fixed envelope.
_VALUES_PER_ENTRY = 13
# The longest compact entry: fixed keys and punctuation, two hex digests, three 20-digit integers and a
# 255-byte portable (ASCII, never escaped) path come to 512 bytes.
_BYTES_PER_ENTRY = 640
# Format 2: a member entry has five fields (11 values and keys, at most ~420 bytes compact), a frame entry four
# (9 values and keys, at most ~180 bytes compact). Only metadata members are listed: at most the five required,
# MAX_ATTESTATIONS (16) attestations and a Sigstore bundle.
MAX_METADATA_MEMBERS = 22
_VALUES_PER_MEMBER_V2 = 11
_VALUES_PER_FRAME = 9
_BYTES_PER_MEMBER_V2 = 512
_BYTES_PER_FRAME = 256


def max_length(size: int) -> int:
    """The most compressed bytes a zstd frame of ``size`` decoded bytes takes (zstd's compress bound, raw blocks
    included: 3 bytes per 128 KiB block), with room for the frame header and checksum."""
    return size + size // 128 + 1024


@dataclass(frozen=True)
class IndexEntry:
    """A format-1 member: its two frames' file span and the data frame's digest."""

    path: str
    offset: int
    length: int
    size: int
    sha256: str
    frame_sha256: (
        str  # SHA-256 of the member's compressed data frame (the header frame is rebuilt from path, size and mtime)
    )

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "offset": self.offset,
            "length": self.length,
            "size": self.size,
            "sha256": self.sha256,
            "frameSha256": self.frame_sha256,
        }


@dataclass(frozen=True, slots=True)
class MemberEntry:
    """A format-2 member: ``frame`` holds its 512-byte header at byte ``at`` of the frame's decompressed bytes."""

    path: str
    frame: int
    at: int
    size: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "frame": self.frame, "path": self.path, "sha256": self.sha256, "size": self.size}


class MemberList(Sequence[MemberEntry]):
    """Format 2: a full index's members, the payload members made on access (from the signed file list, or the
    writer's records) and the metadata members after them. A kit of a million files is not a million entry objects
    held side by side: each is made when it is looked at, its path the list's own string."""

    __slots__ = ("_count", "_payload", "_table", "metadata")

    def __init__(self, count: int, payload: Callable[[int], MemberEntry], metadata: tuple[MemberEntry, ...]) -> None:
        self._count = count
        self._payload = payload
        self.metadata = metadata
        self._table: FileTable | None = None  # the columns ``payload`` reads (check_members reads them, not entries)

    def placements(self) -> Iterator[tuple[int, int, int]]:
        """Each member's (frame, at, size), in order; from a file table's columns, without making the entries."""
        rows = self._table.placements() if self._table else map(_placement, map(self._payload, range(self._count)))
        return chain(rows, map(_placement, self.metadata))

    @classmethod
    def of_files(cls, files: Sequence[FileEntry], metadata: tuple[MemberEntry, ...]) -> MemberList:
        if isinstance(files, FileTable):
            table = files
            paths = table.paths

            def made(number: int) -> MemberEntry:
                return MemberEntry(
                    paths[number], table.frame(number), table.at(number), table.size(number), table.sha256(number)
                )

            members = cls(len(table), made, metadata)
            members._table = table
            return members
        return cls(len(files), lambda n: _member_of(files[n]), metadata)

    def __len__(self) -> int:
        return self._count + len(self.metadata)

    @overload
    def __getitem__(self, number: int) -> MemberEntry: ...
    @overload
    def __getitem__(self, number: slice) -> tuple[MemberEntry, ...]: ...
    def __getitem__(self, number: int | slice) -> MemberEntry | tuple[MemberEntry, ...]:
        if isinstance(number, slice):
            return tuple(self[n] for n in range(*number.indices(len(self))))
        if number < 0:
            number += len(self)
        if not 0 <= number < len(self):
            raise IndexError(number)
        if number < self._count:
            return self._payload(number)
        return self.metadata[number - self._count]

    def __iter__(self) -> Iterator[MemberEntry]:
        made = self._payload
        for number in range(self._count):
            yield made(number)
        yield from self.metadata

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]


_placement: Callable[[IndexEntry | MemberEntry], tuple[int, int, int]] = attrgetter("frame", "at", "size")


def _member_of(entry: FileEntry) -> MemberEntry:
    return MemberEntry(entry.path, entry.frame or 0, entry.at, entry.size, entry.sha256)


@dataclass(frozen=True, slots=True)
class MemberSpan:
    """A format-2 member located: the frames that hold it, in order, the first one holding its header at ``at``.

    Either all of the member (header, data, padding) lies in ``frames[0]`` (a group or metadata frame), or
    ``frames[0]`` is its 512-byte header alone and ``frames[1:]`` hold exactly its padded data (a large member).
    """

    path: str
    size: int
    sha256: str
    frame: int
    at: int
    frames: tuple[FrameEntry, ...]
    stream_offset: int  # where its header lies in the decompressed tar stream

    @property
    def offset(self) -> int:
        """File offset of the first frame holding the member."""
        return self.frames[0].offset


@dataclass(frozen=True)
class KitIndex:
    """A parsed and checked index, format 1 or 2.

    Format 1: ``members`` are ``IndexEntry``; ``end_offset``/``end_length`` the end-of-archive frame.
    Format 2: ``members`` are ``MemberEntry``, ``frames`` every zstd frame, ``end`` the index of the
    end-of-archive frame (``end_offset``/``end_length`` are derived from it). As read from a kit
    (``complete`` False) the members are the metadata members only; ``with_payload`` adds the payload
    members from the signed file list. The bytes written (``to_bytes``) list the metadata members only.
    """

    format_version: int
    members: tuple[IndexEntry, ...] | Sequence[MemberEntry]
    end_offset: int
    end_length: int
    frames: tuple[FrameEntry, ...] = ()
    end: int = 0
    complete: bool = True

    @classmethod
    def v2(
        cls, frames: tuple[FrameEntry, ...], members: Sequence[MemberEntry], end: int, *, complete: bool = True
    ) -> KitIndex:
        return cls(2, members, frames[end].offset, frames[end].length, frames, end, complete)

    def with_payload(self, files: Sequence[FileEntry]) -> KitIndex:
        """Format 2: this index (as read: frames and metadata members) with the payload members ``files`` (the
        signed file list, in archive order) before the metadata members; ArchiveError unless they all tile
        the tar stream (``check_tiling``). Paths and digests are the file entries' own string objects."""
        metadata = tuple(m for m in self.members if isinstance(m, MemberEntry))
        index = KitIndex.v2(self.frames, MemberList.of_files(files, metadata), self.end)
        index.check_tiling()
        return index

    def to_bytes(self) -> bytes:
        if self.format_version == 1:
            return jsonio.dump_compact(
                {
                    "format": INDEX_FORMAT,
                    "members": [m.to_json() for m in self.members],
                    "end": {"offset": self.end_offset, "length": self.end_length},
                }
            )
        # Payload members are placed by the signed file list, not here (docs/format.md §0.4): the members from the
        # first metadata member on are listed (a reader refuses any that is not metadata).
        if isinstance(self.members, MemberList):
            listed: Sequence[IndexEntry | MemberEntry] = self.members.metadata
        else:
            # Computed once: payload_frames walks the members (calling it per member was quadratic in files).
            payload_frames = self.payload_frames
            listed = [m for m in self.members if isinstance(m, MemberEntry) and m.frame >= payload_frames]
        return jsonio.dump_compact(
            {
                "end": self.end,
                "format": INDEX_FORMAT_V2,
                "frames": [f.to_json() for f in self.frames],
                "members": [m.to_json() for m in listed],
            }
        )

    @staticmethod
    def max_bytes(members: int, frames: int = 0) -> int:
        """The most bytes an index of ``members`` entries (and ``frames`` frames, format 2) can take."""
        return max(_BYTES_PER_ENTRY * members, _BYTES_PER_MEMBER_V2 * members + _BYTES_PER_FRAME * frames) + 256

    @classmethod
    def from_bytes(cls, data: bytes, *, max_members: int | None = None, max_frames: int | None = None) -> KitIndex:
        """Parse and check an index; with ``max_members`` (and ``max_frames``) the parse cost is bounded first.

        A format-2 index must be a consistent map (``check_tiling``); ArchiveError names the first fault.
        """
        limits = None
        if max_members is not None:
            frames = max_frames or 0
            limits = jsonio.ParseLimits(
                max_values=max(_VALUES_PER_ENTRY * max_members, _VALUES_PER_MEMBER_V2 * max_members)
                + _VALUES_PER_FRAME * frames
                + 32,
                max_containers=max_members + frames + 8,
                why=f"an index of at most {max_members} members and {frames} frames",
            )
        document = jsonio.load_object(data, what="archive index", limits=limits)
        if document.get("format") == INDEX_FORMAT_V2 and (max_members is None or max_frames is not None):
            schemas.validate("index-v2", document, what="archive index")
            frame_list = tuple(FrameEntry.from_json(f) for f in document["frames"])
            if max_frames is not None and len(frame_list) > max_frames:
                raise ArchiveError(f"kit index lists {len(frame_list)} frames, more than the cap of {max_frames}")
            members = tuple(
                MemberEntry(m["path"], m["frame"], m["at"], m["size"], m["sha256"]) for m in document["members"]
            )
            end = document["end"]
            if end >= len(frame_list):
                raise ArchiveError(f"kit index: end frame {end} is not one of its {len(frame_list)} frames")
            metadata_members.check_names(members)
            index = cls.v2(frame_list, members, end, complete=False)
            index.check_frames()
            index.check_members(start=members[0].frame if members else end)
            metadata_members.check_own_frames(members, [f.size for f in frame_list])
            return index
        schemas.validate("index", document, what="archive index")
        return cls(
            format_version=1,
            members=tuple(
                IndexEntry(m["path"], m["offset"], m["length"], m["size"], m["sha256"], m["frameSha256"])
                for m in document["members"]
            ),
            end_offset=document["end"]["offset"],
            end_length=document["end"]["length"],
        )

    def by_path(self) -> dict[str, IndexEntry | MemberSpan]:
        """Every member by path, located (format 2: the frames it spans); the last one wins for a repeated path."""
        if self.format_version == 1:
            return {m.path: m for m in self.members if isinstance(m, IndexEntry)}
        return {span.path: span for span in self.spans()}

    def sizes(self) -> dict[str, int]:
        """Every member's size by path (the last one wins for a repeated path), without locating any."""
        return {m.path: m.size for m in self.members}

    def locate(self, path: str) -> IndexEntry | MemberSpan:
        """One member by path (the last one listed with it), located; StopIteration if none is."""
        if self.format_version == 1:
            return self.by_path()[path]
        members: Sequence[IndexEntry | MemberEntry] = self.members
        member = next(m for m in reversed(members) if m.path == path)
        assert isinstance(member, MemberEntry)
        start = sum(f.size for f in self.frames[: member.frame]) + member.at
        return self.span_of(member, start)

    def located(self) -> list[IndexEntry | MemberSpan]:
        """Every member, located, in index order (format 1: the entries themselves)."""
        if self.format_version == 1:
            return [m for m in self.members if isinstance(m, IndexEntry)]
        return list(self.spans())

    def spans(self) -> list[MemberSpan]:
        """Format 2: every member with the frames that hold it, in index order (the index is already checked)."""
        return list(self.iter_spans())

    def iter_spans(self) -> Iterator[MemberSpan]:
        """``spans``, one at a time (a reader of every member need not hold a span per member)."""
        starts = self.stream_starts()
        for member in self.members:
            assert isinstance(member, MemberEntry)
            yield self.span_of(member, starts[member.frame] + member.at)

    def span_of(self, member: MemberEntry, start: int) -> MemberSpan:
        """Format 2: ``member``, its header at ``start`` of the tar stream, with the frames that hold it (checked)."""
        frames = self.frames
        if member.at + layout.member_bytes(member.size) <= frames[member.frame].size:
            held: tuple[FrameEntry, ...] = (frames[member.frame],)
        else:
            last = member.frame + 1
            left = layout.padded(member.size)
            while left > 0:
                left -= frames[last].size
                last += 1
            held = frames[member.frame : last]
        return MemberSpan(member.path, member.size, member.sha256, member.frame, member.at, held, start)

    def stream_starts(self) -> list[int]:
        """Format 2: each frame's offset in the decompressed tar stream (prefix sums of ``size``)."""
        starts = []
        position = 0
        for frame in self.frames:
            starts.append(position)
            position += frame.size
        return starts

    @property
    def payload_frames(self) -> int:
        """Format 2: frames before the first metadata member's frame; callers compare them with the signed
        manifest (an index as read holds only metadata members, so its first member is the first of them)."""
        members: Sequence[IndexEntry | MemberEntry] = self.members
        if isinstance(members, MemberList):
            return members.metadata[0].frame if members.metadata else self.end
        first = next((m for m in members if isinstance(m, MemberEntry) and is_metadata(m.path)), None)
        return first.frame if first is not None else self.end

    def check_payload_split(self, payload: int, metadata: Collection[str]) -> None:
        """Format 2: the first ``payload`` frames are exactly the frames before the first metadata member.

        The signed manifest lists the payload frames (docs/format.md §0.5: every frame before the first metadata
        frame); ``kit patch`` assembles a kit from them alone and every payload byte is read from a frame whose
        digest is signed. So the first member named in ``metadata`` must start frame ``payload``: a file whose data
        runs past the signed frames, or a frame between them and the metadata, is refused (ArchiveError, after
        ``check_tiling``, which makes the first metadata member's place decide where every other member lies).
        """
        members: Sequence[IndexEntry | MemberEntry] = self.members
        if isinstance(members, MemberList):
            # Its payload part comes from the signed file list, whose paths are never metadata names (§0.7).
            named = [n for n, m in enumerate(members.metadata) if m.path in metadata]
            first = len(members) - len(members.metadata) + named[0] if named else None
        else:
            first = next((n for n, m in enumerate(members) if m.path in metadata), None)
        if first is None:
            return
        member = members[first]
        assert isinstance(member, MemberEntry)
        if (member.frame, member.at) == (payload, 0):
            return
        if member.frame >= payload and first > 0:
            before = members[first - 1]
            raise ArchiveError(
                f"{before.path}: lies in frames past the {payload} payload frames the manifest lists (frame "
                f"{payload} on is not signed); the first metadata member, {member.path}, starts at frame {member.frame}"
            )
        raise ArchiveError(
            f"{member.path}: a metadata member must start the frames after the {payload} payload frames the manifest "
            f"lists, not frame {member.frame} byte {member.at}"
        )

    def check_tiling(self) -> None:
        """Format 2: ArchiveError unless frames tile the file and members tile the tar stream (docs/format.md §0.3).

        Frames: frame 0 at offset 0, each next one where the previous ends, sizes multiples of 512 and non-zero,
        the end-of-archive frame last and 1024 bytes. Members, in order: each header at a 512-byte boundary of
        its frame where the previous member (header, data, padding) ended; a member either lies wholly in its
        header's frame, or its header is alone in its frame (``at`` 0, size 512) and the following frames hold
        exactly its padded data; after the last member, the end-of-archive frame. So no frame holds bytes of
        no member, no member is read from frames that are not its own, and nothing is skipped or read twice.
        """
        self.check_frames()
        self.check_members(start=0)

    def check_frames(self) -> None:
        """Format 2: the frame part of ``check_tiling`` (the frames tile the file up to the index)."""
        frames = self.frames
        offset = 0
        for number, entry in enumerate(frames):
            if entry.offset != offset:
                raise ArchiveError(
                    f"kit index: frame {number} at offset {entry.offset}, but the frame before it ends at {offset}"
                )
            if entry.size == 0 or entry.size % layout.BLOCK:
                raise ArchiveError(
                    f"kit index: frame {number} decompresses to {entry.size} bytes, not a positive multiple of 512"
                )
            if entry.size > layout.MAX_FRAME_SIZE:
                raise ArchiveError(
                    f"kit index: frame {number} decompresses to {entry.size} bytes, more than a frame may hold "
                    f"({layout.MAX_FRAME_SIZE})"
                )
            if entry.length > max_length(entry.size):
                raise ArchiveError(
                    f"kit index: frame {number} is {entry.length} bytes compressed, more than {entry.size} bytes "
                    "can take in a zstd frame"
                )
            offset += entry.length
        if self.end != len(frames) - 1:
            raise ArchiveError(f"kit index: end frame {self.end} is not the last of its {len(frames)} frames")
        if frames[self.end].size != layout.END_SIZE:
            raise ArchiveError(f"kit index: end frame decompresses to {frames[self.end].size} bytes, not 1024")

    def check_members(self, *, start: int) -> None:
        """Format 2: the member part of ``check_tiling``: the members tile the frames from frame ``start`` (0 for a
        complete index; an index as read: its first metadata member's) to the end-of-archive frame."""
        frames, members, number = self.frames, self.members, 0
        frame, at = start, 0  # the frame the next member's header must be in, and where in it
        placements = members.placements() if isinstance(members, MemberList) else map(_placement, members)
        try:  # a kit of a million files: one tuple per member from the columns, a member's path only for a message
            for number, (member_frame, member_at, member_size) in enumerate(placements):  # noqa: B007
                if (member_frame, member_at) != (frame, at):
                    raise ArchiveError(
                        f"header at frame {member_frame} byte {member_at}, but the member before it ends at frame "
                        f"{frame} byte {at}"
                    )
                if frame >= self.end:
                    raise ArchiveError("lies in or after the end-of-archive frame")
                size, whole = frames[frame].size, layout.member_bytes(member_size)
                if at + whole <= size:
                    at += whole
                elif at == 0 and size == layout.BLOCK:
                    left = layout.padded(member_size)
                    frame += 1
                    while left > 0:
                        if frame >= self.end:
                            raise ArchiveError("data runs into the end-of-archive frame")
                        if frames[frame].size > left:
                            raise ArchiveError(
                                f"frame {frame} holds {frames[frame].size} bytes, more than the {left} left of the "
                                "member's data"
                            )
                        left -= frames[frame].size
                        frame += 1
                    at = 0
                    continue
                else:
                    raise ArchiveError(
                        f"{whole} bytes from byte {at} overrun frame {frame} ({size} bytes), and the frame does not "
                        "hold its header alone"
                    )
                if at == size:
                    frame, at = frame + 1, 0
        except ArchiveError as exc:
            raise ArchiveError(f"kit index: member {members[number].path}: {exc.message}") from None
        if (frame, at) != (self.end, 0):
            raise ArchiveError(
                f"kit index: members end at frame {frame} byte {at}, but the end-of-archive frame is frame {self.end}"
            )

"""``manifest.files.jsonl``: the signed file list of a format-2 kit (docs/format.md §0.7).

One line per payload file, in archive order, each exactly the compact, sorted-key JSON of
``{"at":A,"component":C,"frame":F,"path":P,"role":R,"sha256":H,"size":N}`` and a newline: one byte
form per list, so "same bytes" means "same list". The manifest signs the list by digest, size and
line count (``fileList``); the list places every payload file (``frame``, ``at``), so the archive
index need not, and no unsigned byte says where a payload file lies.

The reader accepts only that form: each line is matched by one pattern that admits nothing else
(field order, no whitespace, integers without leading zeros, strings that need no escape), and a
line that does not match is parsed again only to name what is wrong with it. Entries are built
line by line into ``FileEntry`` values; no dict per file is kept.
"""

from __future__ import annotations

import hashlib
import heapq
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Any, overload

from kitbuilder.core import jsonio, paths
from kitbuilder.core.metanames import FILE_LIST as FILE_LIST
from kitbuilder.core.metanames import METADATA_PREFIXES, is_metadata
from kitbuilder.errors import FormatError

MAX_SAFE = (1 << 53) - 1
# The longest line the one form admits: fixed keys and punctuation with the newline (72 bytes), three integers of
# at most 16 digits, a component id of at most 100 bytes, a role of at most 64, a 255-byte path (portable ASCII,
# never escaped) and a digest of 64 come to 603 bytes; the cap per line is the documented 615 (docs/format.md §0.7),
# which bounds it with room to spare (tests/unit/core/test_filelist_bounds.py), so no honest list meets its cap.
MAX_LINE_BYTES = 615
_INT = rb"(0|[1-9][0-9]{0,15})"
_COMPONENT = rb"([A-Za-z0-9][A-Za-z0-9._-]{0,99})"
_ROLE = rb"([a-z][a-z0-9-]{0,63})"
_PATH = rb"([A-Za-z0-9._+@=,/-]{1,255})"
_LINE = re.compile(
    rb'\{"at":' + _INT + rb',"component":"' + _COMPONENT + rb'","frame":' + _INT + rb',"path":"' + _PATH
    + rb'","role":"' + _ROLE + rb'","sha256":"([0-9a-f]{64})","size":' + _INT + rb"\}\n"
)  # fmt: skip
_LINE_TEXT = re.compile(_LINE.pattern.decode("ascii"))
# The common line: a path every component of which starts with a character other than "." and which fits a
# ustar name field (at most 100 bytes), for which the kit path rule (core/paths.py) holds without asking. A line
# with any other path is matched by _LINE_TEXT and its path put to that rule.
_PLAIN_LINE = re.compile(
    _LINE.pattern.decode("ascii").replace(
        _PATH.decode("ascii"),
        r'((?=[^"]{1,100}")[A-Za-z0-9_+@=,-][A-Za-z0-9._+@=,-]*(?:/[A-Za-z0-9_+@=,-][A-Za-z0-9._+@=,-]*)*)',
    )
)
_FIELDS = ("at", "component", "frame", "path", "role", "sha256", "size")


@dataclass(frozen=True, slots=True)
class FileEntry:
    """A payload file. Format 1 (read only): ``offset``/``length``/``frame_sha256`` of its two frames.
    Format 2: ``frame`` (index into the manifest's ``frames``) holds its header at byte ``at``; the
    format-1 fields are then unused (0 and "")."""

    path: str
    size: int
    sha256: str
    role: str
    component: str
    offset: int = 0
    length: int = 0
    frame_sha256: str = ""
    frame: int | None = None
    at: int = 0

    def to_json(self) -> dict[str, Any]:
        if self.frame is not None:
            return {
                "path": self.path,
                "size": self.size,
                "sha256": self.sha256,
                "role": self.role,
                "component": self.component,
                "frame": self.frame,
                "at": self.at,
            }
        return {
            "path": self.path,
            "size": self.size,
            "sha256": self.sha256,
            "role": self.role,
            "component": self.component,
            "frame": {"offset": self.offset, "length": self.length, "sha256": self.frame_sha256},
        }

    def line(self) -> str:
        """This file's line of the file list (format 2), newline included."""
        return (
            f'{{"at":{self.at},"component":"{self.component}","frame":{self.frame},"path":"{self.path}",'
            f'"role":"{self.role}","sha256":"{self.sha256}","size":{self.size}}}\n'
        )


@dataclass(frozen=True, slots=True)
class FileListRef:
    """What manifest.json signs about the file list: its name, line count, byte size, digest and payload bytes."""

    count: int
    size: int
    sha256: str
    payload_bytes: int
    path: str = FILE_LIST

    def to_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "path": self.path,
            "payloadBytes": self.payload_bytes,
            "sha256": self.sha256,
            "size": self.size,
        }

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> FileListRef:
        return cls(item["count"], item["size"], item["sha256"], item["payloadBytes"], item["path"])


class FileTable(Sequence[FileEntry]):
    """The files of a parsed file list, stored by column: one path string per file, the digests as 32 raw bytes
    each, sizes and places in machine-word arrays, (role, component) pairs by number. About a third of what a
    tuple of ``FileEntry`` costs (a kit of a million files is read in well under 500 MiB); each ``FileEntry``
    handed out is made on access (role and component strings shared, one object per distinct value).
    """

    __slots__ = ("_ats", "_digests", "_frames", "_kind_list", "_kind_of", "_kinds", "_sizes", "paths")

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._digests = bytearray()
        self._sizes = array("q")
        self._frames = array("q")
        self._ats = array("q")
        self._kinds = array("I")
        self._kind_of: dict[tuple[str, str], int] = {}
        self._kind_list: list[tuple[str, str]] = []

    def append(self, path: str, size: int, sha256: str, role: str, component: str, frame: int, at: int) -> None:
        kind = self._kind_of.get((role, component))
        if kind is None:
            kind = self._kind_of[(role, component)] = len(self._kind_list)
            self._kind_list.append((role, component))
        self.paths.append(path)
        self._digests += bytes.fromhex(sha256)
        self._sizes.append(size)
        self._frames.append(frame)
        self._ats.append(at)
        self._kinds.append(kind)

    @classmethod
    def of(cls, entries: Iterable[FileEntry]) -> FileTable:
        table = cls()
        for entry in entries:
            table.append(entry.path, entry.size, entry.sha256, entry.role, entry.component, entry.frame or 0, entry.at)
        return table

    def with_kinds(self, kinds: Sequence[tuple[str, str]]) -> FileTable:
        """This table with each file's (role, component) from ``kinds`` (in order, one per file); the columns are
        shared, not copied (the writer's table of a build becomes its manifest's)."""
        if len(kinds) != len(self.paths):
            raise ValueError(f"{len(kinds)} roles for {len(self.paths)} files")
        table = FileTable()
        table.paths, table._digests, table._sizes = self.paths, self._digests, self._sizes
        table._frames, table._ats = self._frames, self._ats
        numbers = table._kinds
        for kind in kinds:
            number = table._kind_of.get(kind)
            if number is None:
                number = table._kind_of[kind] = len(table._kind_list)
                table._kind_list.append(kind)
            numbers.append(number)
        return table

    def __len__(self) -> int:
        return len(self.paths)

    @overload
    def __getitem__(self, number: int) -> FileEntry: ...
    @overload
    def __getitem__(self, number: slice) -> tuple[FileEntry, ...]: ...
    def __getitem__(self, number: int | slice) -> FileEntry | tuple[FileEntry, ...]:
        if isinstance(number, slice):
            return tuple(self[n] for n in range(*number.indices(len(self))))
        path = self.paths[number]  # IndexError past the end, and a negative number counts from it
        if number < 0:
            number += len(self.paths)
        return self._entry(number, path)

    def _entry(self, number: int, path: str) -> FileEntry:
        role, component = self._kind_list[self._kinds[number]]
        return FileEntry(
            path,
            self._sizes[number],
            self.sha256(number),
            role,
            component,
            frame=self._frames[number],
            at=self._ats[number],
        )

    def __iter__(self) -> Iterator[FileEntry]:
        kinds = self._kind_list
        digests = self._digests
        for number, path in enumerate(self.paths):
            role, component = kinds[self._kinds[number]]
            yield FileEntry(
                path,
                self._sizes[number],
                digests[32 * number : 32 * number + 32].hex(),
                role,
                component,
                frame=self._frames[number],
                at=self._ats[number],
            )

    def sha256(self, number: int) -> str:
        return self._digests[32 * number : 32 * number + 32].hex()

    def size(self, number: int) -> int:
        return self._sizes[number]

    def frame(self, number: int) -> int:
        return self._frames[number]

    def at(self, number: int) -> int:
        return self._ats[number]

    def component(self, number: int) -> str:
        return self._kind_list[self._kinds[number]][1]

    def payload_bytes(self) -> int:
        return sum(self._sizes)

    def placements(self) -> Iterator[tuple[int, int, int]]:
        """Each file's (frame, at, size), in order, from the columns (no entry object made per file)."""
        return zip(self._frames, self._ats, self._sizes, strict=True)

    def kind_totals(self) -> list[tuple[str, str, int, int]]:
        """(role, component, files, bytes) for each run of files of one role and component, in order: the runs are
        found and summed at C speed (a list of a million files holds a handful of runs)."""
        totals: list[tuple[str, str, int, int]] = []
        start = 0
        for kind, run in groupby(self._kinds):
            count = len(list(run))
            role, component = self._kind_list[kind]
            totals.append((role, component, count, sum(self._sizes[start : start + count])))
            start += count
        return totals

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"FileTable({len(self)} files)"


# path_order merges at most this many ascending runs; a list in any other order is sorted as a whole.
_MAX_RUNS = 64


def path_order(paths: Sequence[str]) -> Iterator[int]:
    """The positions of ``paths`` in path order (SHA256SUMS order; equal paths by position), one at a time.

    A kit's file list is in archive order, which is path order but for a few runs (a build's inputs, then images/,
    then its SBOM): those ascending runs are merged as they are, with no list of a million positions (an int object
    each) beside them. A list of more runs than ``_MAX_RUNS`` (not one kit build writes) is sorted whole.
    """
    runs: list[range] = []
    start = 0
    for number in range(1, len(paths)):
        if paths[number] < paths[number - 1]:
            runs.append(range(start, number))
            start = number
            if len(runs) >= _MAX_RUNS:
                yield from sorted(range(len(paths)), key=paths.__getitem__)
                return
    if paths:
        runs.append(range(start, len(paths)))
    if len(runs) == 1:
        yield from runs[0]
        return
    # heapq.merge is stable across its inputs (ties go to the earlier run): the same order as sorted() gives.
    yield from heapq.merge(*runs, key=paths.__getitem__)


def render_pieces(files: Iterable[FileEntry], piece: int = 1 << 20) -> Iterator[bytes]:
    """The file list's bytes for ``files`` (format-2 entries, in archive order), in pieces of about ``piece`` bytes;
    every line is checked as the reader would check it, so a kit is never sealed with a list its readers refuse."""
    out = bytearray()
    for entry in files:
        line = entry.line().encode("utf-8")
        if (
            entry.frame is None
            or _LINE.fullmatch(line) is None
            or paths.problem_with(entry.path)
            or is_metadata(entry.path)
        ):
            raise FormatError(f"{FILE_LIST}: cannot list {entry.path!r} (not a format-2 entry of the line grammar)")
        out += line
        if len(out) >= piece:
            yield bytes(out)
            out.clear()
    if out:
        yield bytes(out)


def render(files: Iterable[FileEntry]) -> bytes:
    """The file list's bytes for ``files`` in one piece (small lists, tests); see ``render_pieces``."""
    return b"".join(render_pieces(files))


def describe(data: bytes | Iterable[bytes], files: Sequence[FileEntry]) -> FileListRef:
    """The ``fileList`` record for the rendered list ``data`` (its bytes, or its pieces) of ``files``."""
    digest = hashlib.sha256()
    size = 0
    for piece in (data,) if isinstance(data, bytes) else data:
        digest.update(piece)
        size += len(piece)
    return FileListRef(len(files), size, digest.hexdigest(), sum(f.size for f in files))


def parse(
    data: bytes | Iterable[bytes],
    *,
    count: int,
    frame_sizes: Sequence[int],
    what: str = FILE_LIST,
    signed_by: str = "manifest.json",
) -> FileTable:
    """The entries of a file list of ``count`` lines whose ``frame`` must index ``frame_sizes`` (the payload
    frames' decompressed sizes) and whose ``at`` must lie in that frame. ``what`` names the list in errors,
    ``signed_by`` the manifest whose fileList states ``count`` (a delta's target's, an installed kit's).

    ``data`` is the list's bytes, or its pieces in order (a list of a million files is read frame by frame and
    never held whole: a line may span two pieces). FormatError naming the line for anything ``render`` would not
    have written; stops at the first line past ``count``."""
    parser = _Parser(count, frame_sizes, what, signed_by)
    for piece in (data,) if isinstance(data, bytes) else data:
        parser.feed(piece)
    return parser.close()


def parse_pieces(
    data: Iterable[bytes], *, count: int, frame_sizes: Sequence[int], what: str, signed_by: str
) -> Iterator[FileTable]:
    """``parse``, each piece's entries handed out as a table of their own, none kept (a walk of a list in order)."""
    parser = _Parser(count, frame_sizes, what, signed_by)
    for piece in data:
        parser.feed(piece)
        table, parser.table = parser.table, FileTable()
        yield table
    parser.close()


_SLICE = 256 << 10


class _Parser:
    """The file list parsed piece by piece: whole lines are parsed as they arrive, a partial one is held until
    the rest of it does (at most one line's worth: a longer run without a newline is refused)."""

    def __init__(self, count: int, frame_sizes: Sequence[int], what: str, signed_by: str) -> None:
        self.table = FileTable()
        self._count = count
        self._frame_sizes = frame_sizes
        self._what = what
        self._signed_by = signed_by
        self._tail = b""
        self._line = 0  # lines parsed so far

    def feed(self, piece: bytes) -> None:
        # A piece is a whole decoded frame (up to 4 MiB): parsed a slice at a time, the copies made on the way
        # (the joined tail, the cut, its text, the matches) stay a few hundred KiB instead of four frame-sized ones.
        for start in range(0, len(piece), _SLICE):
            self._feed(piece[start : start + _SLICE] if len(piece) > _SLICE else piece)

    def _feed(self, piece: bytes) -> None:
        data = self._tail + piece if self._tail else piece
        cut = data.rfind(b"\n") + 1
        if cut:
            self._lines(data[:cut])
        self._tail = data[cut:]
        if len(self._tail) > MAX_LINE_BYTES:
            raise FormatError(f"{self._what} line {self._line + 1}: longer than {MAX_LINE_BYTES} bytes")

    def close(self) -> FileTable:
        if self._tail:
            raise FormatError(f"{self._what} line {self._line + 1}: {_fault(self._tail, 0)}")
        if self._line != self._count:
            says = f"{self._signed_by} fileList.count says {self._count}"
            raise FormatError(f"{self._what}: {self._line} lines, but {says}")
        return self.table

    def _lines(self, data: bytes) -> None:
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            # Every byte of a list is ASCII (paths are portable, never escaped): find the line to name it.
            text = data.decode("ascii", "replace")
        what, signed_by, count = self._what, self._signed_by, self._count
        frame_sizes = self._frame_sizes
        frames = len(frame_sizes)
        append = self.table.append
        shared: dict[str, str] = {}
        position = 0
        end = len(text)
        line = self._line
        plain, general = _PLAIN_LINE.match, _LINE_TEXT.match
        try:
            while position < end:
                match = plain(text, position)
                checked = match is not None
                if match is None:
                    match = general(text, position)
                    if match is None:
                        raise FormatError(f"{what} line {line + 1}: {_fault(data, len(text[:position].encode()))}")
                if line == count:
                    raise FormatError(f"{what}: more than the {count} lines {signed_by} fileList.count says")
                at_s, component, frame_s, path, role, sha256, size_s = match.groups()
                frame, at, size = int(frame_s), int(at_s), int(size_s)
                if frame >= frames or at >= frame_sizes[frame] or at % 512 or size > MAX_SAFE:
                    raise FormatError(f"{what} line {line + 1}: {_placement(frame, at, size, frame_sizes)}")
                if not checked:
                    # Not the common form: the one path rule decides (., .., reserved names, ustar fit).
                    problem = paths.problem_with(path)
                    if problem is not None:
                        raise FormatError(f"{what} line {line + 1}: path {path!r}: {problem}")
                if path.startswith(METADATA_PREFIXES) and is_metadata(path):
                    # A payload file of a metadata member's name would be one of them wherever the kit is
                    # extracted (an installed directory reads attestations/ and the Sigstore bundle as the kit's).
                    raise FormatError(f"{what} line {line + 1}: path {path!r}: {_METADATA_NAME}")
                append(path, size, sha256, shared.setdefault(role, role), shared.setdefault(component, component),
                       frame, at)  # fmt: skip
                line += 1
                position = match.end()
        finally:
            self._line = line


_METADATA_NAME = "is a metadata member's name, which no payload file may have (docs/format.md §0.7): rebuild the kit"


def _placement(frame: int, at: int, size: int, frame_sizes: Sequence[int]) -> str:
    if frame >= len(frame_sizes):
        return f"frame {frame} is not one of the manifest's {len(frame_sizes)} payload frames"
    if at >= frame_sizes[frame] or at % 512:
        return f"at {at} is not a 512-byte boundary inside frame {frame} ({frame_sizes[frame]} bytes)"
    return f"size {size} exceeds 2^53-1"


def _fault(data: bytes, position: int) -> str:
    """What is wrong with the line at ``position`` (it did not match the one form of a line)."""
    end = data.find(b"\n", position)
    if end < 0:
        return "last line has no newline"
    line = data[position:end]
    try:
        # The strict parser: a refused line can be anything up to the list's cap (1,500 "[" would overflow
        # the plain parser's recursion), and its diagnosis must not fail where the line was refused.
        value = jsonio.loads_strict(line.decode("utf-8"), floats=True)
    except (UnicodeDecodeError, ValueError):
        return "not a JSON object"
    if not isinstance(value, dict):
        return "not a JSON object"
    if sorted(value) != list(_FIELDS):
        return f"expected exactly the fields {', '.join(_FIELDS)}"
    for name in ("at", "frame", "size"):
        if type(value[name]) is not int or not 0 <= value[name] <= MAX_SAFE:
            return f"{name}: not an integer from 0 to 2^53-1"
    for name in ("component", "path", "role", "sha256"):
        if not isinstance(value[name], str):
            return f"{name}: not a string"
    if re.fullmatch(r"[0-9a-f]{64}", value["sha256"]) is None:
        return "sha256: not 64 lowercase hex digits"
    problem = paths.problem_with(value["path"])
    if problem is not None:
        return f"path {value['path']!r}: {problem}"
    if is_metadata(value["path"]):
        return f"path {value['path']!r}: {_METADATA_NAME}"
    if re.fullmatch(r"[A-Za-z0-9._+@=,/-]{1,255}", value["path"]) is None:
        return f"path {value['path']!r}: not a portable kit path (docs/format.md §0.7)"
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value["component"]) is None:
        return f"component {value['component']!r}: not a component id"
    if re.fullmatch(r"[a-z][a-z0-9-]{0,63}", value["role"]) is None:
        return f"role {value['role']!r}: not a role name"
    return "not in the one form of a line (compact JSON, sorted keys, no other whitespace): rebuild the kit"

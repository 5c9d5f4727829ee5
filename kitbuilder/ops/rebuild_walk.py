"""kit patch (file mode): the two file lists a content delta's frame rebuild walks (``frame_rebuild``).

The target's list is the one file mode holds anyway (its ``FileTable``); the base's is read a piece at a time, in
its order, beside it (``Walk``), and once more only for what that walk did not meet (``BaseList.find``, by content:
a batch of at most ``frame_rebuild._HELD_MAX`` keys a pass): neither list is turned into a map of its files, so the
rebuild holds the frames it is making and a bounded batch of keys, not the lists.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from kitbuilder.archive import layout, reader
from kitbuilder.archive.reader import Caps
from kitbuilder.core import filelist
from kitbuilder.core.filelist import FILE_LIST, FileTable
from kitbuilder.core.manifest import MANIFEST_JSON, FileEntry, Manifest
from kitbuilder.errors import ArchiveError, IntegrityError, KitError


def content_key(sha256: str, size: int) -> bytes:
    """The key ``BaseList.find`` looks a content up by: its digest's 32 bytes and its size (40 bytes)."""
    return bytes.fromhex(sha256) + size.to_bytes(8, "big")


def base_key(sha256: str) -> bytes:
    """The key of a patch's base content, which is named by its digest alone (32 bytes)."""
    return bytes.fromhex(sha256)


# Where ``find`` met a content: (frame, at, size) of the base's first small file holding it.
Place = tuple[int, int, int]


def runs(files: Sequence[FileEntry], numbers: Iterable[int]) -> Iterator[tuple[int, int, int]]:
    """(frame, start, end) of the first run of the target's files in each frame of ``numbers``, in list order (a
    group's members lie together in its frame's order; a frame whose members do not cannot be made again)."""
    wanted = set(numbers)
    placements = files.placements() if isinstance(files, FileTable) else ((e.frame or 0, e.at, e.size) for e in files)
    current, start = -1, 0
    for position, (frame, _, _) in enumerate(placements):
        if frame != current:
            if current in wanted:
                wanted.discard(current)
                yield current, start, position
            current, start = frame, position
    if current in wanted:
        yield current, start, len(files)


class Walk:
    """The base's file list walked once in its order, beside the target's members in theirs: ``seek`` with each
    target path in turn gives the base's small file at that path, if the walk meets it there.

    Both lists are in archive order: path order in a few runs (a build's inputs, then images/, then its SBOM). When
    the base's next run starts before the target's does, the walk waits there; when the target's next run starts,
    the walk moves to the base's. A file the walk does not meet is not an error: it is looked up by content in one
    more pass (``BaseList.find``); any order is answered correctly, path order just answers in one pass."""

    def __init__(self, tables: Iterator[FileTable]) -> None:
        self._tables = tables
        self._table = FileTable()
        self._at = -1
        self.path: str | None = None  # the base file the walk is at; None past the end
        self._waiting = False
        self._last = ""  # the last target path asked for
        self._step()

    def _step(self) -> bool:
        """Move to the base's next file; True when it starts a new run (its path sorts before the one before)."""
        before = self.path
        self._at += 1
        while self._at >= len(self._table):
            table = next(self._tables, None)
            if table is None:
                self.path = None
                return False
            self._table, self._at = table, 0
        self.path = self._table.paths[self._at]
        return before is not None and self.path < before

    def seek(self, path: str) -> FileEntry | None:
        if path < self._last:  # the target's next run: the base's next one
            if not self._waiting:
                while self.path is not None and not self._step():
                    pass
            self._waiting = False
        self._last = path
        if self._waiting:
            return None
        while self.path is not None and self.path < path:
            if self._step():
                self._waiting = True
                return None
        if self.path != path:
            return None
        entry = self._table[self._at]
        return None if layout.is_large(entry.size) else entry

    def finish(self) -> None:
        """Read the rest of the base's list: its size and digest are checked at its end."""
        for _ in self._tables:
            pass
        self.path = None


class BaseList:
    """The base's file list, read through the base's descriptor a piece at a time, each pass held to the
    ``fileList`` size and digest of the base manifest the delta names (as trusted as the delta's signature); no
    other base member is read."""

    def __init__(self, stream: BinaryIO, base: Manifest, caps: Caps, path: Path) -> None:
        ref = base.file_list
        self.what = f"{path}: {FILE_LIST}"
        if ref is None:
            raise IntegrityError(f"{self.what}: the base manifest lists no file list; obtain a genuine base")
        index = reader.read_index(stream, caps).index
        try:
            span = index.locate(FILE_LIST)
        except (KeyError, StopIteration):
            raise ArchiveError(f"{path}: kit index has no {FILE_LIST}: not a complete kit") from None
        self.ref, self.span, self.stream, self.caps, self.path = ref, span, stream, caps, path
        self.frame_sizes = [f.size for f in base.frames]

    def tables(self) -> Iterator[FileTable]:
        """One pass: the list's files a piece at a time; IntegrityError at its end unless it is the signed list."""
        ref, what = self.ref, self.what
        digest = hashlib.sha256()
        read = 0
        unread = False  # a frame of it could not be read (named by that error)
        damaged = f"{what}: not the list its signed manifest states; the base is damaged: obtain it again"

        def pieces() -> Iterator[bytes]:
            nonlocal read, unread
            try:
                for piece in reader.member_chunks(self.stream, self.span, self.caps):
                    read += len(piece)
                    if read > ref.size:
                        break
                    digest.update(piece)
                    yield piece
            except (ArchiveError, IntegrityError) as exc:  # its frames, placed by the base's unsigned index
                unread = True
                raise IntegrityError(f"{what}: {exc.message}; the base is damaged: obtain it again") from exc

        def signed() -> bool:
            return read == ref.size and digest.hexdigest() == ref.sha256

        stream = pieces()
        try:
            yield from filelist.parse_pieces(
                stream,
                count=ref.count,
                frame_sizes=self.frame_sizes,
                what=what,
                signed_by=f"{self.path}: {MANIFEST_JSON}",
            )
        except KitError as exc:
            # The list is parsed as it is read, so a list that is not the signed one can fail its parse before its
            # digest is known: that it is not the signed list is the answer, not what its parse tripped on.
            if not unread:
                for _ in stream:
                    pass
                if not signed():
                    raise IntegrityError(damaged) from exc
            raise
        if not signed():
            raise IntegrityError(damaged)

    def find(self, wanted: dict[bytes, Place | None]) -> None:
        """Fill in ``wanted`` (keys of ``content_key`` or ``base_key``): the place of the base's first small file
        with each content, left None where the base holds none. Only the places are kept, not the files."""
        for table in self.tables():
            for number, (frame, at, size) in enumerate(table.placements()):
                if layout.is_large(size):
                    continue
                digest = bytes.fromhex(table.sha256(number))
                for key in (digest + size.to_bytes(8, "big"), digest):
                    if key in wanted and wanted[key] is None:
                        wanted[key] = (frame, at, size)
